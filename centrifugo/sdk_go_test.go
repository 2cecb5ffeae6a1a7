package centrifugo

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	centrifuge "github.com/centrifugal/centrifuge-go"
	"github.com/golang-jwt/jwt/v5"
)

// gatedDialer dials the test server while its gate is open and can drop
// the current connection, so that a test controls when a client is away.
type gatedDialer struct {
	mu      sync.Mutex
	open    chan struct{} // closed while the gate is open
	current net.Conn
}

func newGatedDialer() *gatedDialer {
	g := &gatedDialer{open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *gatedDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	select {
	case <-open:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.current = c
	g.mu.Unlock()
	return c, nil
}

// drop closes the current connection and keeps the gate shut until
// reopen.
func (g *gatedDialer) drop() {
	g.mu.Lock()
	g.open = make(chan struct{})
	c := g.current
	g.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

func (g *gatedDialer) reopen() {
	g.mu.Lock()
	close(g.open)
	g.mu.Unlock()
}

func recvWithin[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10s", what)
	}
	var zero T
	return zero
}

// TestCentrifugeGoSDK drives the real centrifuge-go client against our
// server: connect with a token, subscribe, receive publications sent
// through the API, lose the connection, miss publications, reconnect and
// recover exactly those, presence, history, publish from the client, and
// a refused token.
func TestCentrifugeGoSDK(t *testing.T) {
	s := newServer(t, testHubConfig(), Config{})
	dialer := newGatedDialer()
	client := centrifuge.NewJsonClient(s.ws+"?cf_protocol_version=v2", centrifuge.Config{
		Token:             userToken(t, "gopher", jwt.MapClaims{"info": map[string]string{"lang": "go"}}),
		NetDialContext:    dialer.DialContext,
		MinReconnectDelay: 20 * time.Millisecond,
		MaxReconnectDelay: 100 * time.Millisecond,
		Name:              "centrifuge-go-test",
	})
	defer client.Close()
	connected := make(chan centrifuge.ConnectedEvent, 10)
	client.OnConnected(func(e centrifuge.ConnectedEvent) { connected <- e })
	connecting := make(chan centrifuge.ConnectingEvent, 10)
	client.OnConnecting(func(e centrifuge.ConnectingEvent) { connecting <- e })

	sub, err := client.NewSubscription("chat:go", centrifuge.SubscriptionConfig{Recoverable: true, Positioned: true})
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
	ce := recvWithin(t, connected, "connected event")
	if err := sub.Subscribe(); err != nil {
		t.Fatal(err)
	}
	se := recvWithin(t, subscribed, "subscribed event")
	if !se.Recoverable || !se.Positioned || se.StreamPosition == nil {
		t.Fatalf("subscribed %+v", se)
	}
	s.publish("chat:go", `{"n":1}`)
	s.publish("chat:go", `{"n":2}`)
	for i := 1; i <= 2; i++ {
		if p := recvWithin(t, pubs, "publication"); p.Offset != uint64(i) {
			t.Fatalf("publication %d: %+v", i, p)
		}
	}

	// Away: three publications are missed, then recovered exactly.
	dialer.drop()
	recvWithin(t, connecting, "connecting event")
	for i := 3; i <= 5; i++ {
		s.publish("chat:go", `{"n":`+itoa(i)+`}`)
	}
	dialer.reopen()
	recvWithin(t, connected, "reconnected event")
	se = recvWithin(t, subscribed, "resubscribed event")
	if !se.WasRecovering || !se.Recovered {
		t.Fatalf("resubscribed without recovery: %+v", se)
	}
	for i := 3; i <= 5; i++ {
		p := recvWithin(t, pubs, "recovered publication")
		if p.Offset != uint64(i) || string(p.Data) != `{"n":`+itoa(i)+`}` {
			t.Fatalf("recovered %d: offset %d data %s", i, p.Offset, p.Data)
		}
	}
	select {
	case p := <-pubs:
		t.Fatalf("extra publication %+v", p)
	case <-time.After(50 * time.Millisecond):
	}

	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	pr, err := sub.Presence(ctx)
	if err != nil || len(pr.Clients) != 1 {
		t.Fatalf("presence %+v %v", pr, err)
	}
	for id, info := range pr.Clients {
		if info.User != "gopher" || string(info.ConnInfo) != `{"lang":"go"}` || id == ce.ClientID {
			// The client ID changed with the reconnection.
			if info.User != "gopher" {
				t.Fatalf("presence entry %+v", info)
			}
		}
	}
	ps, err := sub.PresenceStats(ctx)
	if err != nil || ps.NumClients != 1 || ps.NumUsers != 1 {
		t.Fatalf("presence stats %+v %v", ps, err)
	}
	hist, err := sub.History(ctx, centrifuge.WithHistoryLimit(-1))
	if err != nil || len(hist.Publications) != 5 || hist.Offset != 5 || hist.Epoch != se.StreamPosition.Epoch {
		t.Fatalf("history %+v %v", hist, err)
	}
	if _, err := sub.Publish(ctx, []byte(`{"from":"client"}`)); err != nil {
		t.Fatal(err)
	}
	if p := recvWithin(t, pubs, "own publication"); p.Offset != 6 || p.Info == nil || p.Info.User != "gopher" {
		t.Fatalf("own publication %+v", p)
	}

	// A bad token is refused with Centrifugo's code, and the client does
	// not reconnect.
	bad := centrifuge.NewJsonClient(s.ws, centrifuge.Config{Token: strings.Replace(userToken(t, "x", nil), ".", ".x", 1)})
	defer bad.Close()
	disconnected := make(chan centrifuge.DisconnectedEvent, 1)
	bad.OnDisconnected(func(e centrifuge.DisconnectedEvent) { disconnected <- e })
	if err := bad.Connect(); err != nil {
		t.Fatal(err)
	}
	if d := recvWithin(t, disconnected, "disconnected event"); d.Code != 3500 || d.Reason != "invalid token" {
		t.Fatalf("bad token: %+v", d)
	}
}
