package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/broker"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testCodec is a line-oriented JSON codec that counts its encodings.
type testCodec struct {
	name string
	pubs atomic.Int64
}

func (tc *testCodec) MessageType() wsgate.MessageType { return wsgate.TextMessage }
func (tc *testCodec) EncodePublication(ch string, pub *broker.Publication) ([]byte, error) {
	tc.pubs.Add(1)
	if !json.Valid(pub.Data) {
		return nil, errors.New("not JSON")
	}
	info := ""
	if pub.Info != nil {
		info = pub.Info.ClientID
	}
	return fmt.Appendf(nil, `{"t":"pub","codec":%q,"ch":%q,"o":%d,"from":%q,"d":%s}`, tc.name, ch, pub.Offset, info, pub.Data), nil
}
func (tc *testCodec) EncodeJoin(ch string, info *broker.ClientInfo) ([]byte, error) {
	return fmt.Appendf(nil, `{"t":"join","ch":%q,"client":%q}`, ch, info.ClientID), nil
}
func (tc *testCodec) EncodeLeave(ch string, info *broker.ClientInfo) ([]byte, error) {
	return fmt.Appendf(nil, `{"t":"leave","ch":%q,"client":%q}`, ch, info.ClientID), nil
}
func (tc *testCodec) EncodeUnsubscribe(ch string, u Unsubscribe) ([]byte, error) {
	return fmt.Appendf(nil, `{"t":"unsub","ch":%q,"code":%d}`, ch, u.Code), nil
}
func (tc *testCodec) EncodeSubscribe(ch string, res *SubscribeResult) ([]byte, error) {
	return fmt.Appendf(nil, `{"t":"sub","ch":%q,"o":%d,"recovered":%v,"n":%d}`, ch, res.Offset, res.Recovered, len(res.Publications)), nil
}
func (tc *testCodec) EncodeMessage(data []byte) ([]byte, error) {
	return fmt.Appendf(nil, `{"t":"msg","d":%s}`, data), nil
}
func (tc *testCodec) EncodePing() []byte { return []byte(`{"t":"ping"}`) }

// frame is a decoded test codec frame.
type frame struct {
	T         string          `json:"t"`
	Codec     string          `json:"codec"`
	Ch        string          `json:"ch"`
	O         uint64          `json:"o"`
	From      string          `json:"from"`
	D         json.RawMessage `json:"d"`
	Client    string          `json:"client"`
	Code      uint32          `json:"code"`
	Recovered bool            `json:"recovered"`
	N         int             `json:"n"`
}

// env is a hub behind an httptest server; each dialed peer gets a hub
// Client on the server side that tests drive directly.
type env struct {
	t       *testing.T
	h       *Hub
	srv     *httptest.Server
	codec   *testCodec
	opts    wsgate.Options
	clients chan *Client
}

type envOptions struct {
	cfg       Config
	sendBytes int
	sendMsgs  int
	listener  net.Listener
	// writeTimeout is the server connections' WriteTimeout; 3s by default.
	writeTimeout time.Duration
}

func newEnv(t *testing.T, eo envOptions) *env {
	t.Helper()
	if eo.cfg.Logger == nil {
		eo.cfg.Logger = quietLogger()
	}
	h, err := New(context.Background(), eo.cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, h: h, codec: &testCodec{name: "a"}, clients: make(chan *Client, 10000)}
	e.opts = wsgate.Options{
		SendQueuePolicy:   wsgate.PolicyDropNewest,
		SendQueueBytes:    eo.sendBytes,
		SendQueueMessages: eo.sendMsgs,
		WriteTimeout:      max(eo.writeTimeout, 3*time.Second),
		CloseTimeout:      max(eo.writeTimeout, 3*time.Second),
		PingInterval:      -1,
	}
	e.srv = httptest.NewUnstartedServer(http.HandlerFunc(e.serve))
	if eo.listener != nil {
		e.srv.Listener.Close()
		e.srv.Listener = eo.listener
	}
	e.srv.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		e.srv.Close()
	})
	return e
}

// serve upgrades and registers a hub client. The codec is chosen by the
// "codec" query parameter.
func (e *env) serve(w http.ResponseWriter, r *http.Request) {
	codec := Codec(e.codec)
	if r.URL.Query().Get("codec") == "b" {
		codec = codecB
	}
	var mu sync.Mutex
	var cl *Client
	closed := false
	var closeErr error
	opts := e.opts
	opts.OnMessage = func(*wsgate.Conn, wsgate.MessageType, []byte) {}
	opts.OnClose = func(_ *wsgate.Conn, err error) {
		mu.Lock()
		c := cl
		closed, closeErr = true, err
		mu.Unlock()
		if c != nil {
			c.Finish(err)
		}
	}
	conn, err := wsgate.Upgrade(w, r, &opts)
	if err != nil {
		return
	}
	c := e.h.NewClient(conn, codec)
	if c == nil {
		conn.CloseWithStatus(wsgate.StatusCode(DisconnectShutdown.Code), DisconnectShutdown.Reason)
		return
	}
	mu.Lock()
	cl = c
	done := closed
	mu.Unlock()
	if done {
		c.Finish(closeErr)
	}
	e.clients <- c
}

var codecB = &testCodec{name: "b"}

// peer is the test's end of a connection.
type peer struct {
	t      *testing.T
	conn   *wsgate.Conn
	c      *Client // the server side
	frames chan frame
	closed chan error
}

type dialOptions struct {
	codec   string
	stalled bool // never read: the receive queue pauses the socket
	rcvBuf  int
}

func (e *env) dial(do dialOptions) *peer {
	e.t.Helper()
	p := &peer{t: e.t, frames: make(chan frame, 100000), closed: make(chan error, 1)}
	url := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/?codec=" + do.codec
	opts := &wsgate.Options{PingInterval: -1}
	if do.rcvBuf > 0 {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) {
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, do.rcvBuf)
			})
		}}
		opts.NetDialContext = d.DialContext
	}
	if do.stalled {
		opts.RecvQueueMessages = 1
	} else {
		opts.OnMessage = func(_ *wsgate.Conn, _ wsgate.MessageType, data []byte) {
			var f frame
			if err := json.Unmarshal(data, &f); err != nil {
				e.t.Errorf("bad frame %q: %v", data, err)
				return
			}
			p.frames <- f
		}
		opts.OnClose = func(_ *wsgate.Conn, err error) { p.closed <- err }
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := wsgate.Dial(ctx, url, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	p.conn = conn
	e.t.Cleanup(func() { conn.CloseNow() })
	select {
	case p.c = <-e.clients:
	case <-time.After(10 * time.Second):
		e.t.Fatal("no server-side client")
	}
	return p
}

// connect dials and connects anonymously (the hub must allow it).
func (e *env) connect(do dialOptions) *peer {
	e.t.Helper()
	p := e.dial(do)
	if err := e.h.Connect(context.Background(), p.c, ConnectRequest{}, func(*ConnectResult) error { return nil }); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (p *peer) subscribe(h *Hub, req SubscribeRequest) *SubscribeResult {
	p.t.Helper()
	var res *SubscribeResult
	if err := h.Subscribe(context.Background(), p.c, req, func(r *SubscribeResult) error { res = r; return nil }); err != nil {
		p.t.Fatalf("subscribe %s: %v", req.Channel, err)
	}
	return res
}

// next returns the next frame, skipping pings.
func (p *peer) next() frame {
	p.t.Helper()
	for {
		select {
		case f := <-p.frames:
			if f.T == "ping" {
				continue
			}
			return f
		case <-time.After(10 * time.Second):
			p.t.Fatal("no frame within 10s")
		}
	}
}

// none checks that no frame (other than pings) arrives for a while.
func (p *peer) none(d time.Duration) {
	p.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case f := <-p.frames:
			if f.T != "ping" {
				p.t.Fatalf("unexpected frame %+v", f)
			}
		case <-deadline:
			return
		}
	}
}

// closeCode waits for the connection's end and returns the close code.
func (p *peer) closeCode() wsgate.StatusCode {
	p.t.Helper()
	select {
	case err := <-p.closed:
		return wsgate.CloseStatus(err)
	case <-time.After(10 * time.Second):
		p.t.Fatal("connection not closed within 10s")
	}
	return 0
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

var bg = context.Background()

// fakeTokens verifies tokens of the form "user:exp:channels" (connect) and
// "sub|user|channel|exp" (subscribe); "expired" and "bad" fail.
type fakeTokens struct{}

func (fakeTokens) VerifyConnectToken(tok string) (ConnectToken, error) {
	switch tok {
	case "expired":
		return ConnectToken{}, fmt.Errorf("x: %w", ErrTokenExpired)
	case "bad":
		return ConnectToken{}, fmt.Errorf("x: %w", ErrInvalidToken)
	}
	parts := strings.SplitN(tok, ":", 3)
	ct := ConnectToken{UserID: parts[0]}
	if len(parts) > 1 && parts[1] != "" {
		fmt.Sscan(parts[1], &ct.ExpireAt)
	}
	if len(parts) > 2 && parts[2] != "" {
		ct.Channels = strings.Split(parts[2], ",")
	}
	return ct, nil
}

func (fakeTokens) VerifySubscribeToken(tok string) (SubscribeToken, error) {
	switch tok {
	case "expired":
		return SubscribeToken{}, fmt.Errorf("x: %w", ErrTokenExpired)
	case "bad":
		return SubscribeToken{}, fmt.Errorf("x: %w", ErrInvalidToken)
	}
	parts := strings.Split(tok, "|")
	st := SubscribeToken{UserID: parts[1], Channel: parts[2]}
	if len(parts) > 3 {
		fmt.Sscan(parts[3], &st.ExpireAt)
	}
	return st, nil
}

// lossyBroker wraps Memory and drops the deliveries drop selects.
type lossyBroker struct {
	*broker.Memory
	drop func(ch string, pub *broker.Publication) bool
}

func (b *lossyBroker) Run(ctx context.Context, h broker.EventHandler) error {
	return b.Memory.Run(ctx, &lossyHandler{h, b})
}

type lossyHandler struct {
	broker.EventHandler
	b *lossyBroker
}

func (l *lossyHandler) HandlePublication(ch string, pub *broker.Publication, sp broker.StreamPosition) {
	if l.b.drop != nil && l.b.drop(ch, pub) {
		return
	}
	l.EventHandler.HandlePublication(ch, pub, sp)
}

func isCode(err error, code uint32) bool {
	e, d := AsError(err)
	return (e != nil && e.Code == code) || (d != nil && d.Code == code)
}

func newServer(e *env) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(e.serve))
}
