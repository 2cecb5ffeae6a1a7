package natsbroker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/broker/brokertest"
)

// Two brokers on one NATS server learn of each other through their
// announcements, forget a node whose announcement expired, and ignore
// what is not an announcement.
func TestNodeDirectory(t *testing.T) {
	t.Parallel()
	ts := startTestServer(t, EmbeddedOptions{})
	a := newTestBroker(t, Options{URLs: ts.url})
	runTestBroker(t, a, brokertest.NewRecorder(t))
	b := newTestBroker(t, Options{URLs: ts.url})
	runTestBroker(t, b, brokertest.NewRecorder(t))

	nc, err := nats.Connect(ts.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, junk := range []string{"", "{", `{"id":"x"}`, `{"id":"","ttl_ms":1000}`, `{"id":"y","ttl_ms":-5}`} {
		if err := nc.Publish(a.nodeSubject(), []byte(junk)); err != nil {
			t.Fatal(err)
		}
	}

	ctx := context.Background()
	infoA := broker.NodeInfo{ID: "node-a", Name: "a", Version: "v1", Clients: 3, Users: 2, Channels: 4, Subscriptions: 5, UptimeSeconds: 7, TTL: 400 * time.Millisecond}
	if err := a.AnnounceNode(ctx, infoA); err != nil {
		t.Fatal(err)
	}
	if err := b.AnnounceNode(ctx, broker.NodeInfo{ID: "node-b", Name: "b", TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	waitNodes := func(what string, br *Broker, want ...string) []broker.NodeInfo {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			nodes := br.Nodes()
			var ids []string
			for _, n := range nodes {
				ids = append(ids, n.ID)
			}
			if fmt.Sprint(ids) == fmt.Sprint(want) {
				return nodes
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: nodes %v, want %v", what, ids, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	nodes := waitNodes("both announced", b, "node-a", "node-b")
	if nodes[0] != infoA {
		t.Errorf("node a as heard by b: %+v, want %+v", nodes[0], infoA)
	}
	waitNodes("a as seen by itself", a, "node-a", "node-b")
	// a stops announcing: its entry expires after its TTL.
	waitNodes("a expired", b, "node-b")

	if err := a.AnnounceNode(ctx, broker.NodeInfo{ID: "node-a"}); err == nil {
		t.Error("an announcement without a TTL was accepted")
	}
}

// The directory keeps at most maxNodes entries, and makes room by
// dropping expired ones first.
func TestNodeDirectoryBounded(t *testing.T) {
	var d nodeDirectory
	now := time.Now()
	for i := range maxNodes + 10 {
		d.heard(fmt.Appendf(nil, `{"id":"n%d","ttl_ms":1000}`, i), now)
	}
	if n := len(d.list(now)); n != maxNodes {
		t.Fatalf("%d nodes kept, want %d", n, maxNodes)
	}
	later := now.Add(2 * time.Second)
	d.heard([]byte(`{"id":"late","ttl_ms":1000}`), later)
	if got := d.list(later); len(got) != 1 || got[0].ID != "late" {
		t.Fatalf("after expiry: %d nodes, want only the late one", len(got))
	}
}
