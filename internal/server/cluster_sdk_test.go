package server

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	centrifuge "github.com/centrifugal/centrifuge-go"
)

// switchDialer plays a load balancer for the centrifuge-go client: it
// dials the node it currently points to, can drop the connection and hold
// the client off, and then send it to another node.
type switchDialer struct {
	mu     sync.Mutex
	target string        // host:port of the node to dial
	open   chan struct{} // closed while dialing is allowed
	conn   net.Conn
}

func (d *switchDialer) DialContext(ctx context.Context, network, _ string) (net.Conn, error) {
	d.mu.Lock()
	open, target := d.open, d.target
	d.mu.Unlock()
	select {
	case <-open:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, target)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.conn = c
	d.mu.Unlock()
	return c, nil
}

// away drops the connection and holds the client off.
func (d *switchDialer) away() {
	d.mu.Lock()
	d.open = make(chan struct{})
	c := d.conn
	d.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// back lets the client reconnect, to target.
func (d *switchDialer) back(target string) {
	d.mu.Lock()
	d.target = target
	close(d.open)
	d.mu.Unlock()
}

func sdkRecv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(clusterWait):
		t.Fatalf("no %s within %v", what, clusterWait)
	}
	var zero T
	return zero
}

// TestClusterCentrifugeGo: the real centrifuge-go client, connected to
// node A, loses its connection, misses publications sent through node C,
// reconnects to node B, and recovers exactly what it missed.
func TestClusterCentrifugeGo(t *testing.T) {
	t.Parallel()
	n := startNATS(t)
	nodes := startNodes(t, clusterConfig(n.url()), clusterConfig(n.url()), clusterConfig(n.url()))
	dumpLogsOnFailure(t, nodes...)
	a, b, c := nodes[0], nodes[1], nodes[2]

	dialer := &switchDialer{target: a.addr, open: make(chan struct{})}
	close(dialer.open)
	client := centrifuge.NewJsonClient(a.hubURL()+"?cf_protocol_version=v2", centrifuge.Config{
		NetDialContext:    dialer.DialContext,
		MinReconnectDelay: 20 * time.Millisecond,
		MaxReconnectDelay: 100 * time.Millisecond,
		Name:              "centrifuge-go-cluster-test",
	})
	defer client.Close()
	connected := make(chan centrifuge.ConnectedEvent, 10)
	client.OnConnected(func(e centrifuge.ConnectedEvent) { connected <- e })
	connecting := make(chan centrifuge.ConnectingEvent, 10)
	client.OnConnecting(func(e centrifuge.ConnectingEvent) { connecting <- e })
	sub, err := client.NewSubscription(clusterChannel, centrifuge.SubscriptionConfig{Recoverable: true, Positioned: true})
	if err != nil {
		t.Fatal(err)
	}
	pubs := make(chan centrifuge.PublicationEvent, 100)
	sub.OnPublication(func(e centrifuge.PublicationEvent) { pubs <- e })
	subscribed := make(chan centrifuge.SubscribedEvent, 10)
	sub.OnSubscribed(func(e centrifuge.SubscribedEvent) { subscribed <- e })

	if err := client.Connect(); err != nil {
		t.Fatal(err)
	}
	sdkRecv(t, connected, "connected event")
	if err := sub.Subscribe(); err != nil {
		t.Fatal(err)
	}
	first := sdkRecv(t, subscribed, "subscribed event")
	for k := 1; k <= 2; k++ {
		retryPublish(t, a, k)
		if p := sdkRecv(t, pubs, "publication"); p.Offset != uint64(k) || dataN(p.Data) != k {
			t.Fatalf("publication %d: offset %d data %s", k, p.Offset, p.Data)
		}
	}

	dialer.away()
	sdkRecv(t, connecting, "connecting event")
	for k := 3; k <= 5; k++ {
		retryPublish(t, c, k)
	}
	dialer.back(b.addr)
	sdkRecv(t, connected, "reconnected event")
	se := sdkRecv(t, subscribed, "resubscribed event")
	if !se.WasRecovering || !se.Recovered || se.StreamPosition.Epoch != first.StreamPosition.Epoch {
		t.Fatalf("resubscribed on node B without recovery: %+v", se)
	}
	for k := 3; k <= 5; k++ {
		if p := sdkRecv(t, pubs, "recovered publication"); p.Offset != uint64(k) || dataN(p.Data) != k {
			t.Fatalf("recovered %d: offset %d data %s", k, p.Offset, p.Data)
		}
	}
	waitFor(t, "the client on node B only", func() bool { return a.ConnCount() == 0 && b.ConnCount() == 1 })
	// Live again, on node B, from node A's API.
	retryPublish(t, a, 6)
	if p := sdkRecv(t, pubs, "live publication"); p.Offset != 6 {
		t.Fatalf("live publication at offset %d", p.Offset)
	}
	select {
	case p := <-pubs:
		t.Fatalf("extra publication %+v", p)
	case <-time.After(50 * time.Millisecond):
	}
}
