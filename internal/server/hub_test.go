package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/golang-jwt/jwt/v5"
	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/hub"
)

const (
	testSecret = "hub-test-secret-3141"
	testAPIKey = "hub-test-api-key-2718"
)

// demoConfig is a quiet server with what the page's demo needs: anonymous
// clients, client publishing, presence and history for channels without a
// namespace, and an API key.
func demoConfig() Config {
	return Config{
		Heartbeat:      -1,
		AllowAnonymous: true,
		APIKey:         testAPIKey,
		Channels: DefaultChannels(ChannelDefaults{
			HistorySize: 100, HistoryTTL: 5 * time.Minute, Presence: true, JoinLeave: true, AllowPublish: true,
		}, true),
	}
}

func (ts *testServer) hubURL() string { return "ws://" + ts.addr + hubPath }

// hubClient speaks the JSON client protocol over a wsgate.Conn.
type hubClient struct {
	t       *testing.T
	c       *wsgate.Conn
	id      uint32
	pending []*protocol.Reply // decoded, not yet returned
	pushes  []*protocol.Reply // pushes call skipped, for pub
}

func dialHub(t *testing.T, ts *testServer) *hubClient {
	t.Helper()
	return &hubClient{t: t, c: dial(t, ts.hubURL(), &wsgate.Options{PingInterval: -1})}
}

// send writes one command, numbering it, and returns its id.
func (hc *hubClient) send(cmd *protocol.Command) uint32 {
	hc.t.Helper()
	hc.id++
	cmd.Id = hc.id
	b, err := protocol.NewJSONCommandEncoder().Encode(cmd)
	if err != nil {
		hc.t.Fatal(err)
	}
	write(hc.t, hc.c, wsgate.TextMessage, b)
	return cmd.Id
}

// next returns the next reply or push, answering pings.
func (hc *hubClient) next() *protocol.Reply {
	hc.t.Helper()
	for {
		for len(hc.pending) > 0 {
			r := hc.pending[0]
			hc.pending = hc.pending[1:]
			if r.Id == 0 && r.Push == nil && r.Error == nil {
				write(hc.t, hc.c, wsgate.TextMessage, []byte("{}"))
				continue
			}
			return r
		}
		_, frame := read(hc.t, hc.c)
		dec := protocol.NewJSONReplyDecoder(frame)
		for {
			r, err := dec.Decode()
			if err == io.EOF {
				break
			}
			if err != nil {
				hc.t.Fatalf("bad frame %q: %v", frame, err)
			}
			hc.pending = append(hc.pending, r)
		}
	}
}

// call sends cmd and returns its reply; pushes that arrive first are kept
// for pub.
func (hc *hubClient) call(cmd *protocol.Command) *protocol.Reply {
	hc.t.Helper()
	id := hc.send(cmd)
	for {
		r := hc.next()
		if r.Id == id {
			return r
		}
		if r.Push != nil {
			hc.pushes = append(hc.pushes, r)
		}
	}
}

func (hc *hubClient) connect(token string) *protocol.ConnectResult {
	hc.t.Helper()
	r := hc.call(&protocol.Command{Connect: &protocol.ConnectRequest{Token: token}})
	if r.Error != nil || r.Connect == nil {
		hc.t.Fatalf("connect: %v", r)
	}
	return r.Connect
}

func (hc *hubClient) subscribe(ch string) *protocol.SubscribeResult {
	hc.t.Helper()
	r := hc.call(&protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: ch}})
	if r.Error != nil || r.Subscribe == nil {
		hc.t.Fatalf("subscribe %s: %v", ch, r)
	}
	return r.Subscribe
}

// pub returns the next publication push, skipping other pushes.
func (hc *hubClient) pub() (string, *protocol.Publication) {
	hc.t.Helper()
	for {
		var r *protocol.Reply
		if len(hc.pushes) > 0 {
			r, hc.pushes = hc.pushes[0], hc.pushes[1:]
		} else {
			r = hc.next()
		}
		if r.Push != nil && r.Push.Pub != nil {
			return r.Push.Channel, r.Push.Pub
		}
	}
}

// closed waits for the connection to end and returns its close error.
func (hc *hubClient) closed() *wsgate.CloseError {
	hc.t.Helper()
	for {
		if _, _, err := tryRead(hc.c, waitTimeout); err != nil {
			var ce *wsgate.CloseError
			if !errors.As(err, &ce) {
				hc.t.Fatalf("connection ended with %v, want a close frame", err)
			}
			return ce
		}
	}
}

// apiCall posts body to the API at base (".../api") and returns the status
// and the decoded answer (nil when not JSON).
func apiCall(t *testing.T, base, key, method string, body any) (int, map[string]json.RawMessage) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequest(http.MethodPost, base+"/"+method, strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	status, _, text := httpDo(t, req)
	var out map[string]json.RawMessage
	json.Unmarshal([]byte(text), &out)
	return status, out
}

// publish publishes data through the API and returns the result.
func publish(t *testing.T, base, ch string, data any) map[string]any {
	t.Helper()
	status, out := apiCall(t, base, testAPIKey, "publish", map[string]any{"channel": ch, "data": data})
	if status != http.StatusOK || out["error"] != nil {
		t.Fatalf("publish to %s: %d %s", ch, status, out["error"])
	}
	var res map[string]any
	json.Unmarshal(out["result"], &res)
	return res
}

// userToken signs an HS256 connection token for user.
func userToken(t *testing.T, secret, user string) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": user, "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestHub drives the hub's endpoints end to end: connect, subscribe,
// publications from the API and from a client with their offsets,
// presence, and /ws echoing beside them.
func TestHub(t *testing.T) {
	t.Parallel()
	cfg := demoConfig()
	cfg.PingInterval = 3 * time.Second
	ts := startServer(t, cfg)
	api := ts.httpURL() + "/api"

	a, b := dialHub(t, ts), dialHub(t, ts)
	res := a.connect("")
	if res.Ping != 3 || !res.Pong {
		t.Errorf("connect result ping %d pong %v, want the server's -ping-interval (3) and pongs", res.Ping, res.Pong)
	}
	b.connect("")
	sa := a.subscribe("news")
	if !sa.Recoverable || !sa.Positioned || sa.Epoch == "" {
		t.Errorf("subscribe result %+v: want recovery and positioning with history", sa)
	}
	b.subscribe("news")

	// From the backend, through the API: offset 1, to both.
	if res := publish(t, api, "news", map[string]string{"text": "from the backend"}); res["offset"] != float64(1) {
		t.Errorf("publish result %v, want offset 1", res)
	}
	for _, c := range []*hubClient{a, b} {
		ch, pub := c.pub()
		if ch != "news" || pub.Offset != 1 || string(pub.Data) != `{"text":"from the backend"}` {
			t.Errorf("publication %s %d %s", ch, pub.Offset, pub.Data)
		}
	}
	// From a client: offset 2, to both, with the publisher's info.
	if r := a.call(&protocol.Command{Publish: &protocol.PublishRequest{Channel: "news", Data: []byte(`{"text":"hi"}`)}}); r.Error != nil {
		t.Fatalf("client publish: %v", r.Error)
	}
	for _, c := range []*hubClient{a, b} {
		if _, pub := c.pub(); pub.Offset != 2 || pub.Info == nil || pub.Info.Client != res.Client {
			t.Errorf("client publication %+v, want offset 2 from %s", pub, res.Client)
		}
	}
	r := b.call(&protocol.Command{PresenceStats: &protocol.PresenceStatsRequest{Channel: "news"}})
	if r.Error != nil || r.PresenceStats.NumClients != 2 {
		t.Errorf("presence stats %v", r)
	}

	// The echo endpoint is unchanged beside the hub.
	e := dial(t, ts.wsURL(), nil)
	write(t, e, wsgate.TextMessage, []byte("Hello world!"))
	if _, p := read(t, e); string(p) != "Hello world!" {
		t.Errorf("echo %q", p)
	}
	open := ts.logs.waitLog(t, "ws open", map[string]any{"path": hubPath})
	if open["remote"] == nil {
		t.Errorf("open line %v", open)
	}
}

// TestHubDefaults: without any hub setting, a client needs a token, and
// there is no key to check one: everyone is refused as Centrifugo refuses
// them (3501 without a token, 3500 with one), and the log says how to
// open it up.
func TestHubDefaults(t *testing.T) {
	t.Parallel()
	ts := startServer(t, quiet)
	c := dialHub(t, ts)
	c.send(&protocol.Command{Connect: &protocol.ConnectRequest{}})
	if ce := c.closed(); ce.Code != 3501 {
		t.Errorf("anonymous connect closed with %d %q, want 3501", ce.Code, ce.Reason)
	}
	c = dialHub(t, ts)
	c.send(&protocol.Command{Connect: &protocol.ConnectRequest{Token: userToken(t, "anything", "u1")}})
	if ce := c.closed(); ce.Code != 3500 {
		t.Errorf("connect with a token and no key closed with %d %q, want 3500", ce.Code, ce.Reason)
	}
	rec := ts.logs.waitLog(t, "hub", nil)
	if rec["allow_anonymous"] != false || rec["api_key_set"] != false {
		t.Errorf("hub line %v", rec)
	}
	var hint bool
	for _, r := range ts.logs.records(t) {
		msg, _ := r["msg"].(string)
		hint = hint || strings.Contains(msg, DemoFlags)
	}
	if !hint {
		t.Error("no startup hint names the demo flags")
	}
	if status, _ := apiCall(t, ts.httpURL()+"/api", "", "info", nil); status != http.StatusUnauthorized {
		t.Errorf("API without a configured key: %d, want 401", status)
	}
}

func TestHubTokens(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Heartbeat: -1, Tokens: auth.Config{HMACSecret: testSecret}, APIKey: testAPIKey})
	c := dialHub(t, ts)
	c.connect(userToken(t, testSecret, "alice"))
	c.subscribe("news") // channels without a namespace: any connected client
	publish(t, ts.httpURL()+"/api", "news", "x")
	if _, pub := c.pub(); string(pub.Data) != `"x"` || pub.Offset != 0 {
		t.Errorf("publication %+v: want no offset without history", pub)
	}
	// Client publishing and presence are off by default.
	if r := c.call(&protocol.Command{Publish: &protocol.PublishRequest{Channel: "news", Data: []byte(`1`)}}); r.Error == nil || r.Error.Code != 103 {
		t.Errorf("client publish by default: %v, want error 103", r)
	}
	if r := c.call(&protocol.Command{PresenceStats: &protocol.PresenceStatsRequest{Channel: "news"}}); r.Error == nil || r.Error.Code != 108 {
		t.Errorf("presence by default: %v, want error 108", r)
	}

	for name, tok := range map[string]string{
		"wrong key": userToken(t, "another-secret", "alice"),
		"tampered":  strings.Replace(userToken(t, testSecret, "alice"), ".", ".x", 1),
	} {
		c := dialHub(t, ts)
		c.send(&protocol.Command{Connect: &protocol.ConnectRequest{Token: tok}})
		if ce := c.closed(); ce.Code != 3500 {
			t.Errorf("%s: closed with %d, want 3500", name, ce.Code)
		}
	}
	c = dialHub(t, ts)
	c.send(&protocol.Command{Connect: &protocol.ConnectRequest{}})
	if ce := c.closed(); ce.Code != 3501 {
		t.Errorf("no token: closed with %d, want 3501", ce.Code)
	}
	// No secret in any log line.
	for _, r := range ts.logs.records(t) {
		line := fmt.Sprint(r)
		if strings.Contains(line, testSecret) || strings.Contains(line, testAPIKey) {
			t.Errorf("a log line shows a secret: %v", r)
		}
	}
	rec := ts.logs.waitLog(t, "hub", nil)
	if fmt.Sprint(rec["token_keys"]) != "[hmac]" || rec["api_key_set"] != true {
		t.Errorf("hub line %v", rec)
	}
}

func TestAPIKey(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Heartbeat: -1, APIKey: testAPIKey})
	api := ts.httpURL() + "/api"
	for _, key := range []string{"", "wrong", testAPIKey + "x"} {
		if status, _ := apiCall(t, api, key, "info", nil); status != http.StatusUnauthorized {
			t.Errorf("key %q: %d, want 401", key, status)
		}
	}
	status, out := apiCall(t, api, testAPIKey, "info", nil)
	if status != http.StatusOK || out["result"] == nil {
		t.Errorf("info with the key: %d %v", status, out)
	}
	req, _ := http.NewRequest(http.MethodPost, api+"/channels", strings.NewReader("{}"))
	req.Header.Set("Authorization", "apikey "+testAPIKey)
	if status, _, body := httpDo(t, req); status != http.StatusOK || !strings.Contains(body, `"result"`) {
		t.Errorf("Authorization: apikey: %d %q", status, body)
	}
	// Malformed input gets a JSON error, and the server goes on.
	req, _ = http.NewRequest(http.MethodPost, api+"/publish", strings.NewReader("{not json"))
	req.Header.Set("X-API-Key", testAPIKey)
	if status, _, body := httpDo(t, req); status != http.StatusBadRequest || !strings.Contains(body, `"code":107`) {
		t.Errorf("malformed body: %d %q", status, body)
	}
}

// TestAPIAddr: with -api-addr the API has a listener of its own, with its
// own Host check, and the main address no longer serves it.
func TestAPIAddr(t *testing.T) {
	t.Parallel()
	cfg := demoConfig()
	cfg.APIAddr = "127.0.0.1:0"
	ts := startServer(t, cfg)
	addr := ts.APIAddr()
	if addr == nil {
		t.Fatal("no API listener")
	}
	api := "http://" + addr.String() + "/api"
	c := dialHub(t, ts)
	c.connect("")
	c.subscribe("room")
	if res := publish(t, api, "room", "hello"); res["offset"] != float64(1) {
		t.Errorf("publish on the API address: %v", res)
	}
	if _, pub := c.pub(); string(pub.Data) != `"hello"` {
		t.Errorf("publication %s", pub.Data)
	}
	if status, out := apiCall(t, ts.httpURL()+"/api", testAPIKey, "info", nil); status != http.StatusNotFound || out != nil {
		t.Errorf("API on the main address: %d %v, want 404", status, out)
	}
	for _, path := range []string{"/", "/ws", "/healthz", hubPath} {
		if status, _, _ := httpGet(t, "http://"+addr.String()+path); status != http.StatusNotFound {
			t.Errorf("GET %s on the API address: %d, want 404", path, status)
		}
	}
	// On a loopback address it answers localhost names only.
	req, _ := http.NewRequest(http.MethodPost, api+"/info", nil)
	req.Host = "evil.example"
	req.Header.Set("X-API-Key", testAPIKey)
	if status, _, _ := httpDo(t, req); status != http.StatusMisdirectedRequest {
		t.Errorf("Host evil.example on the API address: %d, want 421", status)
	}
	rec := ts.logs.waitLog(t, "hub", nil)
	if rec["api"] != "http://"+addr.String()+"/api/" {
		t.Errorf("hub line api %v", rec["api"])
	}
	// The shutdown closes it too.
	ts.stop(t)
	if nc, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
		nc.Close()
		t.Error("the API listener accepts after the shutdown")
	}
}

func TestAPIAddrInUse(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	log, _ := newTestLogger()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	err = Run(ctx, Config{Addr: "127.0.0.1:0", APIAddr: busy.Addr().String()}, log)
	if err == nil || !strings.Contains(err.Error(), "API address") {
		t.Fatalf("Run = %v, want an error about the API address", err)
	}
}

// TestNamespaces: namespaces carry their own options; the others are
// unknown channels.
func TestNamespaces(t *testing.T) {
	t.Parallel()
	channels := DefaultChannels(ChannelDefaults{}, true)
	channels.Namespaces = []hub.Namespace{{Name: "chat", ChannelOptions: hub.ChannelOptions{
		AllowSubscribeForClient: true, AllowSubscribeForAnonymous: true,
		AllowPublishForSubscriber: true, AllowPublishForAnonymous: true,
		HistorySize: 10, HistoryTTL: time.Minute, ForceRecovery: true,
	}}, {Name: "private", ChannelOptions: hub.ChannelOptions{SubscribeTokenRequired: true}}}
	ts := startServer(t, Config{Heartbeat: -1, AllowAnonymous: true, APIKey: testAPIKey, Channels: channels})
	c := dialHub(t, ts)
	c.connect("")
	c.subscribe("chat:room")
	if r := c.call(&protocol.Command{Publish: &protocol.PublishRequest{Channel: "chat:room", Data: []byte(`"hi"`)}}); r.Error != nil {
		t.Fatalf("publish in chat: %v", r.Error)
	}
	if _, pub := c.pub(); pub.Offset != 1 {
		t.Errorf("publication in chat: offset %d, want 1", pub.Offset)
	}
	// Without a namespace: no client publish (the default).
	c.subscribe("lobby")
	if r := c.call(&protocol.Command{Publish: &protocol.PublishRequest{Channel: "lobby", Data: []byte(`1`)}}); r.Error == nil || r.Error.Code != 103 {
		t.Errorf("publish in lobby: %v, want 103", r)
	}
	for ch, code := range map[string]uint32{"nope:x": 102, "private:x": 103} {
		r := c.call(&protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: ch}})
		if r.Error == nil || r.Error.Code != code {
			t.Errorf("subscribe %s: %v, want error %d", ch, r, code)
		}
	}
	if status, out := apiCall(t, ts.httpURL()+"/api", testAPIKey, "publish", map[string]any{"channel": "nope:x", "data": 1}); status != 200 || !strings.Contains(string(out["error"]), "102") {
		t.Errorf("API publish to an unknown namespace: %d %s", status, out["error"])
	}
	rec := ts.logs.waitLog(t, "hub", nil)
	if fmt.Sprint(rec["namespaces"]) != "[chat private]" {
		t.Errorf("hub line namespaces %v", rec["namespaces"])
	}
}

// TestHubSharesMaxConns: /ws and /connection/websocket connections count
// against the same -max-conns.
func TestHubSharesMaxConns(t *testing.T) {
	t.Parallel()
	cfg := demoConfig()
	cfg.MaxConns = 2
	ts := startServer(t, cfg)
	dial(t, ts.wsURL(), nil)
	h := dialHub(t, ts)
	h.connect("")
	for _, url := range []string{ts.wsURL(), ts.hubURL()} {
		_, err := tryDial(t, url, nil)
		if err == nil {
			t.Fatalf("%s: a third connection was accepted", url)
		}
		if status, body := handshakeStatus(t, err); status != http.StatusServiceUnavailable || !strings.Contains(body, "too many connections") {
			t.Errorf("%s: %d %q, want 503", url, status, body)
		}
	}
	ts.logs.waitLog(t, "ws refused", map[string]any{"path": hubPath})
	h.c.Close()
	waitDone(t, h.c)
	waitFor(t, "the hub connection's slot to be released", func() bool {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		return ts.active == 1
	})
	dialHub(t, ts).connect("")
	closed := ts.logs.waitLog(t, "ws close", map[string]any{"path": hubPath})
	if closed["id"] == nil || closed["code"] == nil {
		t.Errorf("hub close line %v", closed)
	}
}

// TestHubSharesBudget: hub connections hold their buffers in the server's
// memory budget, and -max-message-size bounds their frames.
func TestHubSharesBudget(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Heartbeat: -1, MaxMessageSize: 4 << 20, MemoryBudget: 3 << 20})
	good := dial(t, ts.wsURL(), nil)
	// Two hub clients send most of a 2 MiB frame and stop: over the budget.
	for i := range 2 {
		nc := rawConn(t, ts.addr)
		fmt.Fprintf(nc, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", hubPath, ts.addr)
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("handshake: %v %v", resp, err)
		}
		f := maskedFrame(0x1, make([]byte, 2<<20))
		if _, err := nc.Write(f[:len(f)-(100<<10)*(i+1)]); err != nil {
			t.Fatal(err)
		}
	}
	rec := ts.logs.waitLog(t, "ws close", map[string]any{"code": 1009, "path": hubPath})
	if !strings.Contains(fmt.Sprint(rec["err"]), "memory budget") {
		t.Fatalf("close line %v, want the memory budget as the cause", rec)
	}
	if got := ts.Budget().Evictions(); got != 1 {
		t.Fatalf("%d evictions, want 1", got)
	}
	write(t, good, wsgate.TextMessage, []byte("still served"))
	if _, p := read(t, good); string(p) != "still served" {
		t.Fatalf("got %q", p)
	}

	// A frame over -max-message-size closes with 1009.
	small := startServer(t, Config{Heartbeat: -1, MaxMessageSize: 1024, AllowAnonymous: true})
	c := dialHub(t, small)
	c.connect("")
	write(t, c.c, wsgate.TextMessage, []byte(`{"id":9,"publish":{"channel":"a","data":"`+strings.Repeat("x", 1100)+`"}}`))
	if ce := c.closed(); ce.Code != wsgate.StatusMessageTooBig {
		t.Errorf("oversized frame: closed with %d, want 1009", ce.Code)
	}
}

// healthBroker is a Memory broker whose health the test sets, and which
// records that the hub closed it.
type healthBroker struct {
	*broker.Memory
	down   atomic.Pointer[error]
	closed atomic.Bool
}

func (b *healthBroker) Healthy() error {
	if p := b.down.Load(); p != nil {
		return *p
	}
	return nil
}

func (b *healthBroker) Close(ctx context.Context) error {
	b.closed.Store(true)
	return b.Memory.Close(ctx)
}

func readyz(t *testing.T, h http.Handler) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://localhost/readyz", nil))
	return rec.Code, strings.TrimSpace(rec.Body.String())
}

func TestReadiness(t *testing.T) {
	t.Parallel()
	b := &healthBroker{Memory: broker.NewMemory(broker.MemoryConfig{})}
	cfg := Config{Addr: "127.0.0.1:0", Heartbeat: -1, Broker: b}

	// Before Serve the hub is not running.
	s, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if code, body := readyz(t, s.Handler()); code != 503 || body != "starting" {
		t.Errorf("before Serve: %d %q, want 503 starting", code, body)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://localhost"+hubPath, nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("%s before Serve: %d, want 503", hubPath, rec.Code)
	}

	ts := startServer(t, cfg)
	if code, body := readyz(t, ts.Handler()); code != 200 || body != "ready" {
		t.Errorf("serving: %d %q", code, body)
	}
	down := errors.New("bus unreachable")
	b.down.Store(&down)
	if code, body := readyz(t, ts.Handler()); code != 503 || body != "broker unavailable" {
		t.Errorf("broker down: %d %q, want 503 broker unavailable", code, body)
	}
	line := ts.logs.waitLog(t, "broker unhealthy: /readyz answers 503", nil)
	if line["err"] != "bus unreachable" {
		t.Errorf("log %v", line)
	}
	readyz(t, ts.Handler()) // a second failure logs nothing new
	b.down.Store(nil)
	if code, _ := readyz(t, ts.Handler()); code != 200 {
		t.Errorf("broker back: %d", code)
	}
	ts.logs.waitLog(t, "broker healthy again", nil)
	n := 0
	for _, r := range ts.logs.records(t) {
		if strings.HasPrefix(fmt.Sprint(r["msg"]), "broker unhealthy") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d 'broker unhealthy' lines, want one per change", n)
	}

	// Draining wins over everything.
	b.down.Store(&down)
	if err := ts.stop(t); err != nil {
		t.Fatal(err)
	}
	if code, body := readyz(t, ts.Handler()); code != 503 || body != "shutting down" {
		t.Errorf("after the shutdown: %d %q", code, body)
	}
	if !b.closed.Load() {
		t.Error("the shutdown did not close the broker")
	}
}

// TestShutdownWithHubClients: the shutdown closes /ws clients with 1001 and
// hub clients, connected or not, with Centrifugo's 3001, and closes the
// broker.
func TestShutdownWithHubClients(t *testing.T) {
	t.Parallel()
	b := &healthBroker{Memory: broker.NewMemory(broker.MemoryConfig{})}
	cfg := demoConfig()
	cfg.Broker = b
	ts := startServer(t, cfg)
	hcs := []*hubClient{dialHub(t, ts), dialHub(t, ts)}
	for _, c := range hcs {
		c.connect("")
		c.subscribe("news")
	}
	idle := dialHub(t, ts) // connected but never sent connect
	e := dial(t, ts.wsURL(), nil)
	waitFor(t, "four connections", func() bool { return ts.ConnCount() == 4 })

	done := make(chan error, 1)
	go func() { done <- ts.stop(t) }()
	for _, c := range append(hcs, idle) {
		if ce := c.closed(); ce.Code != 3001 || ce.Reason != "shutdown" {
			t.Errorf("hub client closed with %d %q, want 3001 shutdown", ce.Code, ce.Reason)
		}
	}
	if _, _, err := tryRead(e, waitTimeout); wsgate.CloseStatus(err) != wsgate.StatusGoingAway {
		t.Errorf("/ws client: %v, want 1001", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve returned %v", err)
		}
	case <-time.After(2 * waitTimeout):
		t.Fatal("the shutdown did not finish")
	}
	if !b.closed.Load() {
		t.Error("the broker was not closed")
	}
	if n := ts.ConnCount(); n != 0 {
		t.Errorf("%d connections left", n)
	}
	rec := ts.logs.waitLog(t, "shutting down", nil)
	if rec["conns"] != float64(4) || rec["hub_conns"] != float64(3) {
		t.Errorf("shutting down line %v", rec)
	}
	// New hub clients get 503 now.
	rr := httptest.NewRecorder()
	ts.Handler().ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "http://localhost"+hubPath, nil))
	if rr.Code != http.StatusServiceUnavailable {
		t.Errorf("%s after the shutdown: %d, want 503", hubPath, rr.Code)
	}
}

// TestShutdownTimeoutWithHubClients: a hub client that never answers the
// close is cut off at the timeout, and the hub still stops.
func TestShutdownTimeoutWithHubClients(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	cfg := demoConfig()
	cfg.ShutdownTimeout = timeout
	ts := startServer(t, cfg)
	nc := rawConn(t, ts.addr)
	fmt.Fprintf(nc, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", hubPath, ts.addr)
	if resp, err := http.ReadResponse(bufio.NewReader(nc), nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	waitFor(t, "the connection to register", func() bool { return ts.ConnCount() == 1 })
	start := time.Now()
	err := ts.stop(t)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Serve returned %v, want the deadline", err)
	}
	if d := time.Since(start); d > timeout+2*stragglerGrace+time.Second {
		t.Errorf("shutdown took %v with a %v timeout", d, timeout)
	}
}

func TestDefaultChannelOptions(t *testing.T) {
	t.Parallel()
	if got, want := DefaultChannelOptions(ChannelDefaults{}, false), (hub.ChannelOptions{AllowSubscribeForClient: true}); !reflect.DeepEqual(got, want) {
		t.Errorf("no settings:\n got %+v\nwant %+v", got, want)
	}
	got := DefaultChannelOptions(ChannelDefaults{HistorySize: 10, HistoryTTL: time.Minute, Presence: true, JoinLeave: true, AllowPublish: true}, true)
	want := hub.ChannelOptions{
		AllowSubscribeForClient: true, AllowSubscribeForAnonymous: true,
		HistorySize: 10, HistoryTTL: time.Minute, ForceRecovery: true, ForcePositioning: true,
		AllowHistoryForSubscriber: true, AllowHistoryForAnonymous: true,
		Presence: true, AllowPresenceForSubscriber: true, AllowPresenceForAnonymous: true,
		JoinLeave: true, ForcePushJoinLeave: true,
		AllowPublishForSubscriber: true, AllowPublishForAnonymous: true,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("every setting:\n got %+v\nwant %+v", got, want)
	}
	// Half a history is no history.
	if o := DefaultChannelOptions(ChannelDefaults{HistorySize: 10}, false); o.ForceRecovery || o.AllowHistoryForSubscriber {
		t.Errorf("size without TTL: %+v", o)
	}
}

func TestConfigChannelErrors(t *testing.T) {
	t.Parallel()
	ch := &hub.ChannelConfig{
		MaxLength: -1,
		Default:   hub.ChannelOptions{HistorySize: 10, ForceRecovery: true},
		Namespaces: []hub.Namespace{
			{Name: "ok", ChannelOptions: hub.ChannelOptions{HistorySize: 1, HistoryTTL: 48 * time.Hour}},
			{Name: "a"},
			{Name: "ok"},
			{Name: "re", ChannelOptions: hub.ChannelOptions{ChannelRegex: "[", AllowPositioning: true, HistoryTTL: -time.Second}},
		},
	}
	_, err := Config{Channels: ch, APIAddr: "nope"}.withDefaults()
	var fields []string
	for _, fe := range FieldErrors(err) {
		fields = append(fields, fe.Field)
	}
	want := []string{"APIAddr", "Channels.MaxLength", "Channels.Default.HistoryTTL", "Channels.Default.ForceRecovery",
		"Channels.Namespaces[0].HistoryTTL", "Channels.Namespaces[1].Name", "Channels.Namespaces[2].Name",
		"Channels.Namespaces[3].HistoryTTL", "Channels.Namespaces[3].AllowPositioning", "Channels.Namespaces[3].ChannelRegex"}
	if !reflect.DeepEqual(fields, want) {
		t.Errorf("invalid fields\n %q\nwant %q\n(error %v)", fields, want, err)
	}
	// The server refuses to start with them.
	if _, err := New(Config{Channels: ch}, nil); err == nil {
		t.Error("New accepted invalid channels")
	}
}
