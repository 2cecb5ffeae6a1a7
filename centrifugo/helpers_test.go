package centrifugo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/golang-jwt/jwt/v5"
	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/hub"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// centrifuge-go leaves one goroutine per request that waits for the
	// SDK's read timeout (5s) after the client closed; it is the SDK's, and
	// bounded.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/centrifugal/centrifuge-go.(*Client).sendAsync.func1"))
}

const (
	testSecret = "test-secret"
	testAPIKey = "test-api-key"
)

var bg = context.Background()

// testHubConfig has the namespaces the tests use.
func testHubConfig() hub.Config {
	v, err := auth.New(auth.Config{HMACSecret: testSecret})
	if err != nil {
		panic(err)
	}
	return hub.Config{
		Tokens: v,
		Logger: slog.New(slog.DiscardHandler),
		Channels: hub.ChannelConfig{
			Default: hub.ChannelOptions{AllowSubscribeForClient: true, AllowPublishForSubscriber: true},
			Namespaces: []hub.Namespace{{Name: "chat", ChannelOptions: hub.ChannelOptions{
				AllowSubscribeForClient:    true,
				AllowPublishForSubscriber:  true,
				Presence:                   true,
				JoinLeave:                  true,
				AllowPresenceForSubscriber: true,
				AllowHistoryForSubscriber:  true,
				HistorySize:                100,
				HistoryTTL:                 time.Hour,
				ForceRecovery:              true,
			}}},
		},
	}
}

// server is a hub with the protocol and API handlers on a test server.
type server struct {
	t   *testing.T
	h   *hub.Hub
	srv *httptest.Server
	ws  string // the WebSocket URL
	api string // the API base URL
}

func newServer(t *testing.T, cfg hub.Config, pcfg Config) *server {
	t.Helper()
	h, err := hub.New(bg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.Hub = h
	if pcfg.Logger == nil {
		pcfg.Logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle("/connection/websocket", NewHandler(pcfg))
	mux.Handle("/api/", NewAPIHandler(h, APIConfig{Key: testAPIKey, Logger: slog.New(slog.DiscardHandler)}))
	srv := httptest.NewServer(mux)
	s := &server{t: t, h: h, srv: srv, ws: "ws" + strings.TrimPrefix(srv.URL, "http") + "/connection/websocket", api: srv.URL + "/api"}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(bg, 10*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		srv.Close()
	})
	return s
}

// token signs a connection (or, with a channel claim, subscription) token.
func token(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// api calls the server API and decodes the answer.
func (s *server) apiCall(method string, body any) (int, map[string]json.RawMessage) {
	s.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, s.api+"/"+method, bytes.NewReader(b))
	req.Header.Set("X-API-Key", testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]json.RawMessage
	json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

// publish publishes through the API and returns the result's offset.
func (s *server) publish(ch, data string) uint64 {
	s.t.Helper()
	code, out := s.apiCall("publish", map[string]any{"channel": ch, "data": json.RawMessage(data)})
	if code != 200 || out["error"] != nil {
		s.t.Fatalf("publish: %d %s", code, out["error"])
	}
	var r struct{ Offset uint64 }
	json.Unmarshal(out["result"], &r)
	return r.Offset
}

// client is a raw protocol client on a wsgate connection.
type client struct {
	t      *testing.T
	conn   *wsgate.Conn
	proto  protocol.Type
	nextID uint32
	// replies to commands by id, and pushes, in arrival order.
	replies chan *protocol.Reply
	closed  chan error
}

func (s *server) dial(proto protocol.Type) *client {
	s.t.Helper()
	c := &client{t: s.t, proto: proto, replies: make(chan *protocol.Reply, 10000), closed: make(chan error, 1)}
	opts := &wsgate.Options{PingInterval: -1, Header: http.Header{"Origin": {s.srv.URL}},
		OnMessage: func(_ *wsgate.Conn, _ wsgate.MessageType, data []byte) {
			var dec protocol.ReplyDecoder = protocol.NewJSONReplyDecoder(data)
			if proto == protocol.TypeProtobuf {
				dec = protocol.NewProtobufReplyDecoder(data)
			}
			for {
				r, err := dec.Decode()
				if err == io.EOF {
					return
				}
				if err != nil {
					s.t.Errorf("bad reply frame %q: %v", data, err)
					return
				}
				c.replies <- r
			}
		},
		OnClose: func(_ *wsgate.Conn, err error) { c.closed <- err },
	}
	if proto == protocol.TypeProtobuf {
		opts.Subprotocols = []string{SubprotocolProtobuf}
	}
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	conn, err := wsgate.Dial(ctx, s.ws, opts)
	if err != nil {
		s.t.Fatal(err)
	}
	c.conn = conn
	s.t.Cleanup(func() { conn.CloseNow() })
	return c
}

// send writes commands in one frame, giving each an id; it returns the
// last id.
func (c *client) send(cmds ...*protocol.Command) uint32 {
	c.t.Helper()
	var frame []byte
	for i, cmd := range cmds {
		if cmd.Id == 0 && !isEmpty(cmd) && cmd.Send == nil {
			c.nextID++
			cmd.Id = c.nextID
		}
		if c.proto == protocol.TypeJSON {
			b, _ := protocol.NewJSONCommandEncoder().Encode(cmd)
			if i > 0 {
				frame = append(frame, '\n')
			}
			frame = append(frame, b...)
		} else {
			b, _ := protocol.NewProtobufCommandEncoder().Encode(cmd)
			frame = append(frame, b...)
		}
	}
	typ := wsgate.TextMessage
	if c.proto == protocol.TypeProtobuf {
		typ = wsgate.BinaryMessage
	}
	if err := c.conn.Write(bg, typ, frame); err != nil {
		c.t.Fatal(err)
	}
	return c.nextID
}

func isEmpty(cmd *protocol.Command) bool {
	return cmd.Connect == nil && cmd.Subscribe == nil && cmd.Unsubscribe == nil && cmd.Publish == nil &&
		cmd.Presence == nil && cmd.PresenceStats == nil && cmd.History == nil && cmd.Rpc == nil &&
		cmd.Refresh == nil && cmd.SubRefresh == nil && cmd.Ping == nil
}

func (c *client) sendRaw(data string) {
	c.t.Helper()
	if err := c.conn.Write(bg, wsgate.TextMessage, []byte(data)); err != nil {
		c.t.Fatal(err)
	}
}

// next returns the next reply or push, answering server pings.
func (c *client) next() *protocol.Reply {
	c.t.Helper()
	for {
		select {
		case r := <-c.replies:
			if r.Id == 0 && r.Push == nil && r.Error == nil {
				c.send(&protocol.Command{}) // pong
				continue
			}
			return r
		case <-time.After(10 * time.Second):
			c.t.Fatal("no reply within 10s")
			return nil
		}
	}
}

// reply returns the reply to command id, failing on anything else first.
func (c *client) reply(id uint32) *protocol.Reply {
	c.t.Helper()
	r := c.next()
	if r.Id != id {
		c.t.Fatalf("got %v, want the reply to %d", r, id)
	}
	return r
}

func (c *client) connect(tok string) *protocol.ConnectResult {
	c.t.Helper()
	id := c.send(&protocol.Command{Connect: &protocol.ConnectRequest{Token: tok}})
	r := c.reply(id)
	if r.Error != nil || r.Connect == nil {
		c.t.Fatalf("connect: %v", r)
	}
	return r.Connect
}

func (c *client) subscribe(req *protocol.SubscribeRequest) *protocol.SubscribeResult {
	c.t.Helper()
	id := c.send(&protocol.Command{Subscribe: req})
	r := c.reply(id)
	if r.Error != nil || r.Subscribe == nil {
		c.t.Fatalf("subscribe %s: %v", req.Channel, r)
	}
	return r.Subscribe
}

// pub returns the next publication push.
func (c *client) pub() (string, *protocol.Publication) {
	c.t.Helper()
	r := c.next()
	if r.Push == nil || r.Push.Pub == nil {
		c.t.Fatalf("got %v, want a publication", r)
	}
	return r.Push.Channel, r.Push.Pub
}

// closeCode waits for the end of the connection.
func (c *client) closeCode() wsgate.StatusCode {
	c.t.Helper()
	select {
	case err := <-c.closed:
		return wsgate.CloseStatus(err)
	case <-time.After(10 * time.Second):
		c.t.Fatal("not closed within 10s")
	}
	return 0
}

func userToken(t *testing.T, user string, extra jwt.MapClaims) string {
	claims := jwt.MapClaims{"sub": user, "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range extra {
		claims[k] = v
	}
	return token(t, claims)
}

var _ = fmt.Sprint

var httpClient = &http.Client{Timeout: 30 * time.Second}

func newRequest(method, url, body string) (*http.Request, error) {
	return http.NewRequest(method, url, strings.NewReader(body))
}

func readAll(r io.Reader) string {
	b, _ := io.ReadAll(r)
	return string(b)
}

// idle answers pings for d and fails on anything else.
func (c *client) idle(d time.Duration) {
	c.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case r := <-c.replies:
			if r.Id != 0 || r.Push != nil || r.Error != nil {
				c.t.Fatalf("unexpected %v", r)
			}
			c.send(&protocol.Command{})
		case <-deadline:
			return
		}
	}
}
