package natsbroker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/wsgate/wsgate/broker"
)

// Test timing. The machine may be shared and loaded: bounds are generous,
// they only matter when something is wrong.
const (
	testPresenceTTL = 5 * time.Second
	testGrace       = 15 * time.Second
)

// testLogger keeps test output quiet unless WSGATE_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("WSGATE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// freePort returns a port that was free a moment ago on 127.0.0.1.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// testServer is an embedded NATS server for tests, listening for clients
// on 127.0.0.1.
type testServer struct {
	opts EmbeddedOptions
	e    *Embedded
	url  string
}

func startTestServer(t testing.TB, opts EmbeddedOptions) *testServer {
	t.Helper()
	if opts.ClientAddr == "" {
		opts.ClientAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	}
	if opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	if os.Getenv("WSGATE_TEST_LOG") != "" {
		opts.Logger = testLogger()
	}
	ts := &testServer{opts: opts}
	ts.start(t)
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

func (ts *testServer) start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := StartEmbedded(ctx, ts.opts)
	if err != nil {
		t.Fatal(err)
	}
	ts.e, ts.url = e, e.ClientURL()
}

func (ts *testServer) stop(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.e.Shutdown(ctx); err != nil {
		t.Error(err)
	}
}

// startTestCluster starts n embedded servers routed to each other.
func startTestCluster(t testing.TB, n int) []*testServer {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	}
	servers := make([]*testServer, n)
	started := make(chan error, n)
	for i := range servers {
		servers[i] = &testServer{opts: EmbeddedOptions{
			Name:        fmt.Sprintf("n%d", i),
			ClientAddr:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			StoreDir:    t.TempDir(),
			ClusterName: "test",
			ClusterAddr: addrs[i],
			Routes:      addrs,
		}}
		if os.Getenv("WSGATE_TEST_LOG") != "" {
			servers[i].opts.Logger = testLogger().With("server", i)
		}
	}
	for _, ts := range servers {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			e, err := StartEmbedded(ctx, ts.opts)
			if err == nil {
				ts.e, ts.url = e, e.ClientURL()
			}
			started <- err
		}()
	}
	for range servers {
		if err := <-started; err != nil {
			t.Fatal(err)
		}
	}
	for _, ts := range servers {
		t.Cleanup(func() { ts.stop(t) })
	}
	return servers
}

// newTestBroker returns an unstarted broker with test defaults.
func newTestBroker(t testing.TB, opts Options) *Broker {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	if opts.RequestTimeout == 0 {
		opts.RequestTimeout = 5 * time.Second
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 30 * time.Second
	}
	if opts.ReconnectWait == 0 {
		opts.ReconnectWait = 50 * time.Millisecond
	}
	if opts.PresenceTTL == 0 {
		opts.PresenceTTL = testPresenceTTL
	}
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// runTestBroker starts b with h and closes it when the test ends.
func runTestBroker(t testing.TB, b *Broker, h broker.EventHandler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if err := b.Run(ctx, h); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		closeCtx, cancelClose := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancelClose()
		if err := b.Close(closeCtx); err != nil {
			t.Error(err)
		}
	})
}
