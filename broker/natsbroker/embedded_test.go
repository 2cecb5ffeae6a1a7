package natsbroker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/broker/brokertest"
)

// The zero-config embedded server listens on no port; the broker reaches
// it in process.
func TestEmbeddedInProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	e, err := StartEmbedded(ctx, EmbeddedOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := e.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := e.Shutdown(ctx); err != nil {
			t.Errorf("second Shutdown: %v", err)
		}
	})
	if e.ClientURL() != "" || e.ClusterAddr() != "" || e.Name() != "wsgate" {
		t.Fatalf("client URL %q, cluster address %q, name %q for a zero-config server", e.ClientURL(), e.ClusterAddr(), e.Name())
	}
	b := newTestBroker(t, Options{InProcess: e})
	rec := brokertest.NewRecorder(t)
	runTestBroker(t, b, rec)
	subscribe(t, b, "room")
	sp, err := b.Publish(ctx, "room", []byte("hello"), histOpts(10))
	if err != nil || sp.Offset != 1 {
		t.Fatalf("Publish: %+v, %v", sp, err)
	}
	rec.WaitPublications(t, waitLong, "room", 1)
}

// A cluster address of port 0 gets a free port, and the name follows it.
func TestEmbeddedClusterAddr(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	peer := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // nobody there: the server keeps trying
	e, err := StartEmbedded(ctx, EmbeddedOptions{StoreDir: t.TempDir(), ClusterAddr: "127.0.0.1:0", Routes: []string{peer}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown(ctx)
	if a := e.ClusterAddr(); !strings.HasPrefix(a, "127.0.0.1:") || strings.HasSuffix(a, ":0") {
		t.Fatalf("cluster address %q", a)
	}
	if !strings.HasPrefix(e.Name(), "wsgate-127.0.0.1-") {
		t.Fatalf("name %q", e.Name())
	}
	if u := e.ClientURL(); !strings.HasPrefix(u, "nats://127.0.0.1:") {
		t.Fatalf("a clustered server's client URL is %q, want one on 127.0.0.1", u)
	}
}

func TestEmbeddedOptionsErrors(t *testing.T) {
	for _, o := range []EmbeddedOptions{
		{Routes: []string{"127.0.0.1:6222"}},
		{ClusterAddr: "no-port"},
		{ClusterAddr: "127.0.0.1:99999"},
		{ClientAddr: "127.0.0.1:x"},
		{ClusterAddr: "127.0.0.1:0", Routes: []string{"nats-route://"}},
		{ClusterAddr: "127.0.0.1:0"},
	} {
		if _, err := StartEmbedded(context.Background(), o); err == nil {
			t.Errorf("StartEmbedded(%+v) accepted invalid options", o)
		}
	}
}

// Route URLs carry the cluster credentials.
func TestRouteURL(t *testing.T) {
	u, err := routeURL("10.0.0.2:6222", "wsgate", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if got := u.String(); got != "nats-route://wsgate:s3cret@10.0.0.2:6222" {
		t.Fatalf("route URL %q", got)
	}
	u, err = routeURL("nats-route://other:pw@h:1", "wsgate", "s3cret")
	if err != nil || u.User.Username() != "other" {
		t.Fatalf("an explicit user was replaced: %v %v", u, err)
	}
}

var _ broker.Broker = (*Broker)(nil)
