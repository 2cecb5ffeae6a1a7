package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// centrifuge-go (TestClusterCentrifugeGo) leaves a request's timeout
	// goroutine behind after Close, until its read timeout.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/centrifugal/centrifuge-go.(*Client).sendAsync.func1"))
}

// waitTimeout bounds every wait in these tests.
const waitTimeout = 10 * time.Second

// logBuffer collects JSON log lines; it is safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// records returns the log lines written so far, decoded.
func (b *logBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	data := bytes.Clone(b.buf.Bytes())
	b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// find returns the first record with message msg that matches every
// key/value in want (values compared as fmt %v strings), or nil.
func (b *logBuffer) find(t *testing.T, msg string, want map[string]any) map[string]any {
	t.Helper()
	for _, r := range b.records(t) {
		if r["msg"] != msg {
			continue
		}
		ok := true
		for k, v := range want {
			if fmt.Sprint(r[k]) != fmt.Sprint(v) {
				ok = false
				break
			}
		}
		if ok {
			return r
		}
	}
	return nil
}

// waitLog waits until a record like find's appears and returns it.
func (b *logBuffer) waitLog(t *testing.T, msg string, want map[string]any) map[string]any {
	t.Helper()
	var rec map[string]any
	waitFor(t, fmt.Sprintf("log %q %v", msg, want), func() bool {
		rec = b.find(t, msg, want)
		return rec != nil
	})
	return rec
}

func newTestLogger() (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	return slog.New(slog.NewJSONHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testServer is a Server serving on 127.0.0.1 for one test.
type testServer struct {
	*Server
	addr   string // host:port
	logs   *logBuffer
	cancel context.CancelFunc
	done   chan error // receives Serve's result
}

// startServer serves cfg on a fresh 127.0.0.1 port until the test ends.
func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	log, logs := newTestLogger()
	s, err := New(cfg, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: s, addr: ln.Addr().String(), logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		ts.stop(t)
	})
	logs.waitLog(t, "wsgate listening", nil) // Serve has started
	return ts
}

// stop cancels Serve and returns its result; calling it again returns nil.
func (ts *testServer) stop(t *testing.T) error {
	t.Helper()
	ts.cancel()
	select {
	case err, ok := <-ts.done:
		if ok {
			close(ts.done)
		}
		return err
	case <-time.After(waitTimeout + ts.cfg.ShutdownTimeout):
		t.Fatalf("Serve did not return after cancel")
		return nil
	}
}

func (ts *testServer) wsURL() string   { return "ws://" + ts.addr + "/ws" }
func (ts *testServer) httpURL() string { return "http://" + ts.addr }

// dial opens a client connection that is cut off when the test ends, and
// waits for it to finish so that goleak sees no engine goroutine.
func dial(t *testing.T, url string, opts *wsgate.Options) *wsgate.Conn {
	t.Helper()
	c, err := tryDial(t, url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return c
}

// tryDial is dial that returns the error.
func tryDial(t *testing.T, url string, opts *wsgate.Options) (*wsgate.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := wsgate.Dial(ctx, url, opts)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		c.CloseNow()
		waitDone(t, c)
	})
	return c, nil
}

// waitDone waits for c to end.
func waitDone(t *testing.T, c *wsgate.Conn) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(waitTimeout):
		t.Fatalf("connection to %v did not end", c.RemoteAddr())
	}
}

// read reads one message within waitTimeout.
func read(t *testing.T, c *wsgate.Conn) (wsgate.MessageType, []byte) {
	t.Helper()
	typ, p, err := tryRead(c, waitTimeout)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, p
}

func tryRead(c *wsgate.Conn, d time.Duration) (wsgate.MessageType, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.Read(ctx)
}

// readNonHeartbeat reads the next message that is not a heartbeat.
func readNonHeartbeat(t *testing.T, c *wsgate.Conn) (wsgate.MessageType, []byte) {
	t.Helper()
	for {
		typ, p := read(t, c)
		if typ == wsgate.TextMessage && string(p) == HeartbeatMessage {
			continue
		}
		return typ, p
	}
}

func write(t *testing.T, c *wsgate.Conn, typ wsgate.MessageType, p []byte) {
	t.Helper()
	if err := c.Write(context.Background(), typ, p); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// httpGet performs a request with a bounded client and returns the status,
// headers and body.
func httpDo(t *testing.T, req *http.Request) (int, http.Header, string) {
	t.Helper()
	client := &http.Client{Timeout: waitTimeout}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	var body strings.Builder
	if _, err := bufio.NewReader(resp.Body).WriteTo(&body); err != nil {
		t.Fatalf("reading body of %s: %v", req.URL, err)
	}
	return resp.StatusCode, resp.Header, body.String()
}

func httpGet(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return httpDo(t, req)
}

// handshakeStatus returns the HTTP status of a failed Dial, or fails.
func handshakeStatus(t *testing.T, err error) (int, string) {
	t.Helper()
	var he *wsgate.HandshakeError
	if !errors.As(err, &he) {
		t.Fatalf("dial error %v is not a *wsgate.HandshakeError", err)
	}
	return he.StatusCode, he.Body
}

// rawUpgrade opens a TCP connection and completes the opening handshake by
// hand, for a client that misbehaves afterwards.
func rawUpgrade(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(waitTimeout))
	fmt.Fprintf(nc, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", addr)
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading handshake response: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake status %d, want 101", resp.StatusCode)
	}
	return nc, br
}

// maskedFrame encodes a final client frame with a zero masking key, which
// leaves the payload as it is.
func maskedFrame(op byte, payload []byte) []byte {
	out := []byte{0x80 | op}
	switch n := len(payload); {
	case n <= 125:
		out = append(out, 0x80|byte(n))
	case n <= 0xFFFF:
		out = append(out, 0x80|126, byte(n>>8), byte(n))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	out = append(out, 0, 0, 0, 0)
	return append(out, payload...)
}
