package centrifugo

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/golang-jwt/jwt/v5"
	"github.com/wsgate/wsgate/hub"
)

func TestConnectSubscribePublish(t *testing.T) {
	s := newServer(t, testHubConfig(), Config{})
	c := s.dial(protocol.TypeJSON)
	res := c.connect(userToken(t, "42", jwt.MapClaims{"info": map[string]string{"name": "Ann"}}))
	if res.Client == "" || res.Version != "wsgate" || res.Ping != 25 || !res.Pong || !res.Expires || res.Ttl == 0 {
		t.Fatalf("connect result %v", res)
	}
	sub := c.subscribe(&protocol.SubscribeRequest{Channel: "chat:room"})
	if !sub.Recoverable || !sub.Positioned || sub.Epoch == "" || sub.Offset != 0 {
		t.Fatalf("subscribe result %v", sub)
	}
	if off := s.publish("chat:room", `{"text":"hi"}`); off != 1 {
		t.Fatalf("offset %d", off)
	}
	ch, pub := c.pub()
	if ch != "chat:room" || string(pub.Data) != `{"text":"hi"}` || pub.Offset != 1 {
		t.Fatalf("publication %s %v", ch, pub)
	}
	// Client publish (subscribers may publish): the publication carries the
	// publisher's info.
	id := c.send(&protocol.Command{Publish: &protocol.PublishRequest{Channel: "chat:room", Data: []byte(`"from client"`)}})
	gotReply, gotPub := false, false
	for !gotReply || !gotPub {
		r := c.next()
		switch {
		case r.Id == id:
			if r.Error != nil || r.Publish == nil {
				t.Fatalf("publish reply %v", r)
			}
			gotReply = true
		case r.Push != nil && r.Push.Pub != nil:
			if string(r.Push.Pub.Data) != `"from client"` || r.Push.Pub.Info == nil || r.Push.Pub.Info.User != "42" || string(r.Push.Pub.Info.ConnInfo) != `{"name":"Ann"}` {
				t.Fatalf("client publication %v", r.Push.Pub)
			}
			gotPub = true
		default:
			t.Fatalf("unexpected %v", r)
		}
	}
	// Presence, presence stats, history.
	id = c.send(&protocol.Command{Presence: &protocol.PresenceRequest{Channel: "chat:room"}})
	r := c.reply(id)
	if r.Presence == nil || len(r.Presence.Presence) != 1 || r.Presence.Presence[res.Client].User != "42" {
		t.Fatalf("presence %v", r)
	}
	id = c.send(&protocol.Command{PresenceStats: &protocol.PresenceStatsRequest{Channel: "chat:room"}})
	if r := c.reply(id); r.PresenceStats == nil || r.PresenceStats.NumClients != 1 || r.PresenceStats.NumUsers != 1 {
		t.Fatalf("presence stats %v", r)
	}
	id = c.send(&protocol.Command{History: &protocol.HistoryRequest{Channel: "chat:room", Limit: -1}})
	if r := c.reply(id); r.History == nil || len(r.History.Publications) != 2 || r.History.Offset != 2 || r.History.Epoch != sub.Epoch {
		t.Fatalf("history %v", r)
	}
	id = c.send(&protocol.Command{History: &protocol.HistoryRequest{Channel: "chat:room", Since: &protocol.StreamPosition{Offset: 1, Epoch: "other"}}})
	if r := c.reply(id); r.Error == nil || r.Error.Code != 112 {
		t.Fatalf("history of another epoch %v", r)
	}
	id = c.send(&protocol.Command{Unsubscribe: &protocol.UnsubscribeRequest{Channel: "chat:room"}})
	if r := c.reply(id); r.Unsubscribe == nil {
		t.Fatalf("unsubscribe %v", r)
	}
	id = c.send(&protocol.Command{Presence: &protocol.PresenceRequest{Channel: "chat:room"}})
	if r := c.reply(id); r.Error == nil || r.Error.Code != 103 {
		t.Fatalf("presence after unsubscribe %v", r)
	}
}

func TestRecoverAfterReconnect(t *testing.T) {
	s := newServer(t, testHubConfig(), Config{})
	tok := userToken(t, "u", nil)
	c := s.dial(protocol.TypeJSON)
	c.connect(tok)
	sub := c.subscribe(&protocol.SubscribeRequest{Channel: "chat:r"})
	s.publish("chat:r", `1`)
	_, pub := c.pub()
	c.conn.CloseNow()
	for i := 2; i <= 4; i++ {
		s.publish("chat:r", "2")
	}
	c2 := s.dial(protocol.TypeJSON)
	c2.connect(tok)
	res := c2.subscribe(&protocol.SubscribeRequest{Channel: "chat:r", Recover: true, Epoch: sub.Epoch, Offset: pub.Offset})
	if !res.Recovered || !res.WasRecovering || len(res.Publications) != 3 || res.Publications[0].Offset != 2 || res.Publications[2].Offset != 4 {
		t.Fatalf("recovery %v", res)
	}
}

// Server-side subscriptions from the token's channels claim, recovered on
// reconnect through the connect request.
func TestServerSideSubscriptions(t *testing.T) {
	s := newServer(t, testHubConfig(), Config{})
	tok := userToken(t, "u", jwt.MapClaims{"channels": []string{"chat:srv"}})
	c := s.dial(protocol.TypeJSON)
	res := c.connect(tok)
	sr := res.Subs["chat:srv"]
	if sr == nil || !sr.Recoverable {
		t.Fatalf("subs %v", res.Subs)
	}
	s.publish("chat:srv", `"a"`)
	if ch, _ := c.pub(); ch != "chat:srv" {
		t.Fatal(ch)
	}
	c.conn.CloseNow()
	s.publish("chat:srv", `"b"`)
	c2 := s.dial(protocol.TypeJSON)
	id := c2.send(&protocol.Command{Connect: &protocol.ConnectRequest{Token: tok, Subs: map[string]*protocol.SubscribeRequest{
		"chat:srv": {Recover: true, Epoch: sr.Epoch, Offset: 1},
	}}})
	r := c2.reply(id)
	got := r.Connect.Subs["chat:srv"]
	if got == nil || !got.Recovered || len(got.Publications) != 1 || string(got.Publications[0].Data) != `"b"` {
		t.Fatalf("recovered server-side subscription %v", got)
	}
}

func TestBatchedCommandsAndPong(t *testing.T) {
	cfg := testHubConfig()
	cfg.PingInterval = 50 * time.Millisecond
	cfg.PongTimeout = 100 * time.Millisecond
	s := newServer(t, cfg, Config{})
	c := s.dial(protocol.TypeJSON)
	// Connect and two subscriptions in one frame, newline-separated.
	last := c.send(
		&protocol.Command{Connect: &protocol.ConnectRequest{Token: userToken(t, "u", nil)}},
		&protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: "a"}},
		&protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: "b"}},
	)
	for id := last - 2; id <= last; id++ {
		if r := c.reply(id); r.Error != nil {
			t.Fatalf("reply %d: %v", id, r)
		}
	}
	// Answering pings keeps the connection through several pong timeouts.
	c.idle(300 * time.Millisecond)
	s.publish("a", `1`)
	if ch, _ := c.pub(); ch != "a" {
		t.Fatal(ch)
	}
	// A client that does not answer is closed with "no pong".
	silent := s.dial(protocol.TypeJSON)
	silent.connect(userToken(t, "v", nil))
	if code := silent.closeCode(); code != 3012 {
		t.Fatalf("close %d", code)
	}
}

func TestBadInput(t *testing.T) {
	cfg := testHubConfig()
	release := make(chan struct{})
	var calls atomic.Int32
	cfg.Callbacks.OnRPC = func(ctx context.Context, c *hub.Client, e hub.RPCEvent) (hub.RPCReply, error) {
		calls.Add(1)
		if e.Method == "block" {
			<-release
		}
		return hub.RPCReply{Data: e.Data}, nil
	}
	s := newServer(t, cfg, Config{MaxPendingFrames: 8})
	defer close(release)
	// A bystander subscribed all along loses nothing.
	bystander := s.dial(protocol.TypeJSON)
	bystander.connect(userToken(t, "b", nil))
	bystander.subscribe(&protocol.SubscribeRequest{Channel: "calm"})

	cases := []struct {
		name string
		do   func(c *client)
		code uint32
	}{
		{"malformed JSON", func(c *client) { c.sendRaw(`{"id":1,"connect":`) }, 3501},
		{"not an object", func(c *client) { c.sendRaw(`[1,2,3]`) }, 3501},
		{"command before connect", func(c *client) { c.send(&protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: "x"}}) }, 3501},
		{"no method", func(c *client) { c.connect(userToken(t, "u", nil)); c.sendRaw(`{"id":5,"nosuch":{}}`) }, 3501},
		{"ping request", func(c *client) {
			c.connect(userToken(t, "u", nil))
			c.send(&protocol.Command{Ping: &protocol.PingRequest{}})
		}, 3501},
		{"pong before any ping", func(c *client) { c.connect(userToken(t, "u", nil)); c.sendRaw(`{}`) }, 3501},
		{"invalid token", func(c *client) { c.send(&protocol.Command{Connect: &protocol.ConnectRequest{Token: "x.y.z"}}) }, 3500},
		{"oversized frame", func(c *client) { c.sendRaw(`{"id":1,"rpc":{"data":"` + strings.Repeat("x", 70000) + `"}}`) }, 1009},
		{"flood", func(c *client) {
			c.connect(userToken(t, "u", nil))
			for i := 0; i < 50; i++ {
				// Writes fail once the server has closed: ignored.
				c.conn.Write(bg, 1, []byte(`{"id":`+itoa(i+10)+`,"rpc":{"method":"block"}}`))
			}
		}, 3013},
	}
	for _, tc := range cases {
		c := s.dial(protocol.TypeJSON)
		tc.do(c)
		if code := c.closeCode(); uint32(code) != tc.code {
			t.Errorf("%s: close %d, want %d", tc.name, code, tc.code)
		}
	}
	// Expired token: an error reply, then the connection is unusable.
	c := s.dial(protocol.TypeJSON)
	id := c.send(&protocol.Command{Connect: &protocol.ConnectRequest{Token: token(t, jwt.MapClaims{"sub": "u", "exp": time.Now().Add(-time.Minute).Unix()})}})
	if r := c.reply(id); r.Error == nil || r.Error.Code != 109 || r.Error.Message != "token expired" {
		t.Fatalf("expired token: %v", r)
	}
	c.send(&protocol.Command{Connect: &protocol.ConnectRequest{Token: userToken(t, "u", nil)}})
	if code := c.closeCode(); code != 3501 {
		t.Fatalf("after a failed connect: %d", code)
	}
	// Error replies leave the connection open.
	c = s.dial(protocol.TypeJSON)
	c.connect(userToken(t, "u", nil))
	for _, tc := range []struct {
		cmd  *protocol.Command
		code uint32
	}{
		{&protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: "nope:x"}}, 102},
		{&protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: "$secret"}}, 103},
		{&protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: "chat:t", Token: "bad"}}, 103},
		{&protocol.Command{Publish: &protocol.PublishRequest{Channel: "chat:t", Data: []byte(`1`)}}, 103},
		{&protocol.Command{History: &protocol.HistoryRequest{Channel: "plain"}}, 108},
		{&protocol.Command{Refresh: &protocol.RefreshRequest{Token: token(t, jwt.MapClaims{"sub": "other"})}}, 0},
	} {
		id := c.send(tc.cmd)
		if tc.code == 0 {
			break // the refresh with another user's token closes: below
		}
		if r := c.reply(id); r.Error == nil || r.Error.Code != tc.code {
			t.Errorf("%v: %v, want error %d", tc.cmd, r, tc.code)
		}
	}
	if code := c.closeCode(); code != 3500 {
		t.Fatalf("refresh with another user's token: %d", code)
	}
	// The bystander still gets its publications.
	s.publish("calm", `"still here"`)
	if _, pub := bystander.pub(); string(pub.Data) != `"still here"` {
		t.Fatal(pub)
	}
}

func TestRPCRefreshSubRefresh(t *testing.T) {
	cfg := testHubConfig()
	cfg.Callbacks.OnRPC = func(ctx context.Context, c *hub.Client, e hub.RPCEvent) (hub.RPCReply, error) {
		if e.Method != "echo" {
			return hub.RPCReply{}, hub.ErrorMethodNotFound
		}
		return hub.RPCReply{Data: e.Data}, nil
	}
	s := newServer(t, cfg, Config{})
	c := s.dial(protocol.TypeJSON)
	c.connect(userToken(t, "u", nil))
	id := c.send(&protocol.Command{Rpc: &protocol.RPCRequest{Method: "echo", Data: []byte(`{"a":1}`)}})
	if r := c.reply(id); r.Rpc == nil || string(r.Rpc.Data) != `{"a":1}` {
		t.Fatalf("rpc %v", r)
	}
	id = c.send(&protocol.Command{Rpc: &protocol.RPCRequest{Method: "nope"}})
	if r := c.reply(id); r.Error == nil || r.Error.Code != 104 {
		t.Fatalf("rpc unknown %v", r)
	}
	exp := time.Now().Add(2 * time.Hour).Unix()
	id = c.send(&protocol.Command{Refresh: &protocol.RefreshRequest{Token: token(t, jwt.MapClaims{"sub": "u", "exp": exp})}})
	if r := c.reply(id); r.Refresh == nil || !r.Refresh.Expires || r.Refresh.Ttl < 7000 {
		t.Fatalf("refresh %v", r)
	}
	subTok := token(t, jwt.MapClaims{"sub": "u", "channel": "$priv", "exp": exp})
	sub := c.subscribe(&protocol.SubscribeRequest{Channel: "$priv", Token: subTok})
	if !sub.Expires {
		t.Fatalf("token subscription %v", sub)
	}
	id = c.send(&protocol.Command{SubRefresh: &protocol.SubRefreshRequest{Channel: "$priv", Token: subTok}})
	if r := c.reply(id); r.SubRefresh == nil || !r.SubRefresh.Expires {
		t.Fatalf("sub refresh %v", r)
	}
}

func TestProtobuf(t *testing.T) {
	s := newServer(t, testHubConfig(), Config{})
	c := s.dial(protocol.TypeProtobuf)
	c.connect(userToken(t, "u", nil))
	c.subscribe(&protocol.SubscribeRequest{Channel: "chat:pb"})
	j := s.dial(protocol.TypeJSON)
	j.connect(userToken(t, "v", nil))
	j.subscribe(&protocol.SubscribeRequest{Channel: "chat:pb"})
	s.publish("chat:pb", `{"x":1}`)
	if ch, pub := c.pub(); ch != "chat:pb" || string(pub.Data) != `{"x":1}` {
		t.Fatalf("protobuf %s %v", ch, pub)
	}
	if _, pub := j.pub(); string(pub.Data) != `{"x":1}` {
		t.Fatalf("json %v", pub)
	}
	// Binary data published by the Protobuf client cannot go to JSON
	// clients: they are closed with "inappropriate protocol".
	id := c.send(&protocol.Command{Publish: &protocol.PublishRequest{Channel: "chat:pb", Data: []byte{0xff, 0x00}}})
	for {
		r := c.next()
		if r.Id == id {
			break
		}
	}
	if code := j.closeCode(); code != 3506 {
		t.Fatalf("json client: %d", code)
	}
}

func TestAPI(t *testing.T) {
	s := newServer(t, testHubConfig(), Config{})
	c := s.dial(protocol.TypeJSON)
	res := c.connect(userToken(t, "ann", nil))
	c.subscribe(&protocol.SubscribeRequest{Channel: "chat:api"})

	code, out := s.apiCall("publish", map[string]any{"channel": "chat:api", "data": map[string]int{"n": 1}})
	var pr struct {
		Offset uint64
		Epoch  string
	}
	json.Unmarshal(out["result"], &pr)
	if code != 200 || pr.Offset != 1 || pr.Epoch == "" {
		t.Fatalf("publish %d %s", code, out)
	}
	if _, pub := c.pub(); string(pub.Data) != `{"n":1}` {
		t.Fatal(pub)
	}
	code, out = s.apiCall("broadcast", map[string]any{"channels": []string{"chat:api", "nope:x"}, "data": "x"})
	if code != 200 || !strings.Contains(string(out["result"]), `"code":102`) {
		t.Fatalf("broadcast %d %s", code, out)
	}
	c.pub()
	for _, tc := range []struct {
		method string
		body   any
		want   string
	}{
		{"publish", map[string]any{"channel": "", "data": 1}, `"code":107`},
		{"publish", map[string]any{"channel": "nope:x", "data": 1}, `"code":102`},
		{"presence", map[string]any{"channel": "chat:api"}, `"user":"ann"`},
		{"presence", map[string]any{"channel": "plain"}, `"code":108`},
		{"presence_stats", map[string]any{"channel": "chat:api"}, `"num_clients":1,"num_users":1`},
		{"history", map[string]any{"channel": "chat:api", "limit": -1}, `"offset":2`},
		{"history", map[string]any{"channel": "chat:api", "limit": 1, "reverse": true}, `"data":"x"`},
		{"channels", map[string]any{}, `"chat:api":{"num_clients":1}`},
		{"channels", map[string]any{"pattern": "zzz*"}, `"channels":{}`},
		{"info", map[string]any{}, `"num_clients":1`},
		{"history_remove", map[string]any{"channel": "chat:api"}, `"result":{}`},
		{"history", map[string]any{"channel": "chat:api", "limit": -1}, `"publications":[]`},
	} {
		code, out := s.apiCall(tc.method, tc.body)
		raw, _ := json.Marshal(out)
		if code != 200 || !strings.Contains(string(raw), tc.want) {
			t.Errorf("%s %v: %d %s, want %s", tc.method, tc.body, code, raw, tc.want)
		}
	}
	// Server-side subscribe and unsubscribe, then disconnect.
	if code, out := s.apiCall("subscribe", map[string]any{"user": "ann", "channel": "srv"}); code != 200 || out["error"] != nil {
		t.Fatalf("subscribe %d %s", code, out)
	}
	if r := c.next(); r.Push == nil || r.Push.Subscribe == nil || r.Push.Channel != "srv" {
		t.Fatalf("subscribe push %v", r)
	}
	s.apiCall("unsubscribe", map[string]any{"user": "ann", "channel": "srv"})
	if r := c.next(); r.Push == nil || r.Push.Unsubscribe == nil || r.Push.Unsubscribe.Code != 2000 {
		t.Fatalf("unsubscribe push %v", r)
	}
	s.apiCall("disconnect", map[string]any{"user": "ann", "client": res.Client, "disconnect": map[string]any{"code": 4001, "reason": "bye"}})
	if code := c.closeCode(); code != 4001 {
		t.Fatalf("disconnect %d", code)
	}
}

func TestAPIAuthAndBadRequests(t *testing.T) {
	s := newServer(t, testHubConfig(), Config{})
	do := func(method, path, body string, hdr map[string]string) (int, string) {
		req, _ := newRequest(method, s.api+path, body)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b := readAll(resp.Body)
		return resp.StatusCode, b
	}
	key := map[string]string{"X-API-Key": testAPIKey}
	cases := []struct {
		name, method, path, body string
		hdr                      map[string]string
		code                     int
		contains                 string
	}{
		{"no key", "POST", "/publish", `{}`, nil, 401, ""},
		{"wrong key", "POST", "/publish", `{}`, map[string]string{"X-API-Key": "nope"}, 401, ""},
		{"authorization header", "POST", "/info", `{}`, map[string]string{"Authorization": "apikey " + testAPIKey}, 200, `"nodes"`},
		{"wrong scheme", "POST", "/info", `{}`, map[string]string{"Authorization": "Bearer " + testAPIKey}, 401, ""},
		{"GET", "GET", "/info", ``, key, 405, ""},
		{"unknown method", "POST", "/nosuch", `{}`, key, 404, `"code":104`},
		{"malformed", "POST", "/publish", `{"channel":`, key, 400, `"code":107`},
		{"wrong type", "POST", "/publish", `{"channel":5}`, key, 400, `"code":107`},
		{"trailing data", "POST", "/publish", `{"channel":"a","data":1} {}`, key, 400, `"code":107`},
		{"bad b64data", "POST", "/publish", `{"channel":"a","b64data":"!!"}`, key, 200, `"code":107`},
		{"empty body", "POST", "/info", ``, key, 200, `"nodes"`},
		{"huge body", "POST", "/publish", `{"channel":"a","data":"` + strings.Repeat("x", 11<<20) + `"}`, key, 413, `"code":107`},
	}
	for _, tc := range cases {
		code, body := do(tc.method, tc.path, tc.body, tc.hdr)
		if code != tc.code || !strings.Contains(body, tc.contains) {
			t.Errorf("%s: %d %q, want %d with %q", tc.name, code, body, tc.code, tc.contains)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
