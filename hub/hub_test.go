package hub

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate/broker"
)

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func openCfg() Config {
	return Config{
		AllowAnonymous: true,
		Channels: ChannelConfig{
			Default: ChannelOptions{AllowSubscribeForClient: true, AllowSubscribeForAnonymous: true,
				AllowPublishForClient: true, AllowPublishForAnonymous: true},
			Namespaces: []Namespace{
				{Name: "hist", ChannelOptions: ChannelOptions{
					AllowSubscribeForClient: true, AllowSubscribeForAnonymous: true,
					HistorySize: 100, HistoryTTL: time.Minute, ForceRecovery: true,
					AllowHistoryForClient: true, AllowHistoryForAnonymous: true,
				}},
				{Name: "pres", ChannelOptions: ChannelOptions{
					AllowSubscribeForClient: true, AllowSubscribeForAnonymous: true,
					Presence: true, JoinLeave: true, ForcePushJoinLeave: true,
					AllowPresenceForSubscriber: true, AllowPresenceForAnonymous: true,
				}},
				{Name: "closed", ChannelOptions: ChannelOptions{}},
			},
		},
	}
}

func TestPublishReachesSubscribersEncodedOnce(t *testing.T) {
	e := newEnv(t, envOptions{cfg: openCfg()})
	var peers []*peer
	for i := 0; i < 5; i++ {
		p := e.connect(dialOptions{})
		p.subscribe(e.h, SubscribeRequest{Channel: "news"})
		peers = append(peers, p)
	}
	pb := e.connect(dialOptions{codec: "b"})
	pb.subscribe(e.h, SubscribeRequest{Channel: "news"})
	before, beforeB := e.codec.pubs.Load(), codecB.pubs.Load()
	sp, err := e.h.Publish(bg, "news", []byte(`{"n":1}`), PublishOptions{})
	if err != nil || sp != (broker.StreamPosition{}) {
		t.Fatalf("publish: %+v %v", sp, err)
	}
	for _, p := range peers {
		if f := p.next(); f.T != "pub" || f.Ch != "news" || string(f.D) != `{"n":1}` || f.Codec != "a" {
			t.Fatalf("got %+v", f)
		}
	}
	if f := pb.next(); f.Codec != "b" {
		t.Fatalf("codec b client got %+v", f)
	}
	if n := e.codec.pubs.Load() - before; n != 1 {
		t.Errorf("codec a encoded %d times for 5 subscribers, want 1", n)
	}
	if n := codecB.pubs.Load() - beforeB; n != 1 {
		t.Errorf("codec b encoded %d times, want 1", n)
	}
	st := e.h.Stats()
	if st.Clients != 6 || st.Channels != 1 || st.Subscriptions != 6 || st.Deliveries != 6 || st.Publications != 1 || st.Users != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestConnectRules(t *testing.T) {
	cfg := openCfg()
	cfg.AllowAnonymous = false
	cfg.Tokens = fakeTokens{}
	e := newEnv(t, envOptions{cfg: cfg})
	connect := func(req ConnectRequest) (*ConnectResult, error) {
		p := e.dial(dialOptions{})
		var res *ConnectResult
		err := e.h.Connect(bg, p.c, req, func(r *ConnectResult) error { res = r; return nil })
		return res, err
	}
	if _, err := connect(ConnectRequest{}); !isCode(err, DisconnectBadRequest.Code) {
		t.Errorf("anonymous when not allowed: %v", err)
	}
	if _, err := connect(ConnectRequest{Token: "expired"}); !isCode(err, ErrorTokenExpired.Code) {
		t.Errorf("expired token: %v", err)
	}
	if _, err := connect(ConnectRequest{Token: "bad"}); !isCode(err, DisconnectInvalidToken.Code) {
		t.Errorf("invalid token: %v", err)
	}
	if _, err := connect(ConnectRequest{Token: fmt.Sprintf("u1:%d:", time.Now().Unix()-10)}); !isCode(err, ErrorExpired.Code) {
		t.Errorf("expired credentials: %v", err)
	}
	if _, err := connect(ConnectRequest{Token: "u1::nope:x"}); !isCode(err, ErrorUnknownChannel.Code) {
		t.Errorf("unknown channel in token: %v", err)
	}
	res, err := connect(ConnectRequest{Token: fmt.Sprintf("u1:%d:news,hist:a", time.Now().Unix()+100)})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Expires || res.TTL < 90 || res.TTL > 100 || res.ClientID == "" || res.Ping != 25 || !res.Pong {
		t.Errorf("result %+v", res)
	}
	if len(res.Subs) != 2 || res.Subs["hist:a"] == nil || !res.Subs["hist:a"].Recoverable || res.Subs["hist:a"].Epoch == "" {
		t.Errorf("server-side subs %+v", res.Subs)
	}
	c := e.h.ClientByID(res.ClientID)
	if c == nil || c.UserID() != "u1" || !c.IsSubscribed("news") || !c.IsSubscribed("hist:a") {
		t.Fatalf("client %+v", c)
	}
	// Connecting twice is a protocol violation.
	if err := e.h.Connect(bg, c, ConnectRequest{}, func(*ConnectResult) error { return nil }); !isCode(err, DisconnectBadRequest.Code) {
		t.Errorf("second connect: %v", err)
	}
}

func TestSubscribeRules(t *testing.T) {
	cfg := openCfg()
	cfg.Tokens = fakeTokens{}
	cfg.ClientChannelLimit = 3
	cfg.Channels.Namespaces = append(cfg.Channels.Namespaces,
		Namespace{Name: "tok", ChannelOptions: ChannelOptions{AllowSubscribeForClient: true, SubscribeTokenRequired: true}},
		Namespace{Name: "users", ChannelOptions: ChannelOptions{AllowUserLimitedChannels: true}},
		Namespace{Name: "re", ChannelOptions: ChannelOptions{AllowSubscribeForClient: true, AllowSubscribeForAnonymous: true, ChannelRegex: `^[a-z]+$`}},
	)
	e := newEnv(t, envOptions{cfg: cfg})
	p := e.connect(dialOptions{})
	sub := func(req SubscribeRequest) error {
		return e.h.Subscribe(bg, p.c, req, func(*SubscribeResult) error { return nil })
	}
	cases := []struct {
		req  SubscribeRequest
		code uint32
	}{
		{SubscribeRequest{Channel: ""}, DisconnectBadRequest.Code},
		{SubscribeRequest{Channel: string(make([]byte, 300))}, ErrorBadRequest.Code},
		{SubscribeRequest{Channel: "nope:x"}, ErrorUnknownChannel.Code},
		{SubscribeRequest{Channel: "bad\x01name"}, ErrorBadRequest.Code},
		{SubscribeRequest{Channel: "re:ABC"}, ErrorBadRequest.Code},
		{SubscribeRequest{Channel: "closed:x"}, ErrorPermissionDenied.Code},
		{SubscribeRequest{Channel: "$private"}, ErrorPermissionDenied.Code},
		{SubscribeRequest{Channel: "tok:x"}, ErrorPermissionDenied.Code},
		{SubscribeRequest{Channel: "tok:x", Token: "expired"}, ErrorTokenExpired.Code},
		{SubscribeRequest{Channel: "tok:x", Token: "bad"}, ErrorPermissionDenied.Code},
		{SubscribeRequest{Channel: "tok:x", Token: "sub||tok:y"}, DisconnectInvalidToken.Code},
		{SubscribeRequest{Channel: "tok:x", Token: "sub|someone|tok:x"}, DisconnectInvalidToken.Code},
		{SubscribeRequest{Channel: "tok:x", Token: fmt.Sprintf("sub||tok:x|%d", time.Now().Unix()-5)}, ErrorExpired.Code},
		{SubscribeRequest{Channel: "users:room#u1,u2"}, ErrorPermissionDenied.Code},
	}
	for _, tc := range cases {
		if err := sub(tc.req); !isCode(err, tc.code) {
			t.Errorf("%q (token %q): got %v, want code %d", tc.req.Channel, tc.req.Token, err, tc.code)
		}
	}
	for _, ch := range []string{"re:abc", "tok:x", "$private"} {
		tok := ""
		if ch != "re:abc" {
			tok = "sub||" + ch
		}
		if err := sub(SubscribeRequest{Channel: ch, Token: tok}); err != nil {
			t.Errorf("%s: %v", ch, err)
		}
	}
	if err := sub(SubscribeRequest{Channel: "re:abc"}); !isCode(err, ErrorAlreadySubscribed.Code) {
		t.Errorf("duplicate: %v", err)
	}
	if err := sub(SubscribeRequest{Channel: "re:other"}); !isCode(err, ErrorLimitExceeded.Code) {
		t.Errorf("limit: %v", err)
	}
	// User-limited channels admit the listed users.
	cfg2 := openCfg()
	cfg2.Tokens = fakeTokens{}
	cfg2.Channels.Namespaces = append(cfg2.Channels.Namespaces, Namespace{Name: "users", ChannelOptions: ChannelOptions{AllowUserLimitedChannels: true}})
	e2 := newEnv(t, envOptions{cfg: cfg2})
	p2 := e2.dial(dialOptions{})
	if err := e2.h.Connect(bg, p2.c, ConnectRequest{Token: "u2"}, func(*ConnectResult) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := e2.h.Subscribe(bg, p2.c, SubscribeRequest{Channel: "users:room#u1,u2"}, func(*SubscribeResult) error { return nil }); err != nil {
		t.Errorf("listed user: %v", err)
	}
}

func TestRecovery(t *testing.T) {
	e := newEnv(t, envOptions{cfg: openCfg()})
	var last broker.StreamPosition
	for i := 1; i <= 5; i++ {
		sp, err := e.h.Publish(bg, "hist:a", []byte(fmt.Sprint(i)), PublishOptions{})
		if err != nil || sp.Offset != uint64(i) {
			t.Fatalf("publish %d: %+v %v", i, sp, err)
		}
		last = sp
	}
	p := e.connect(dialOptions{})
	res := p.subscribe(e.h, SubscribeRequest{Channel: "hist:a", Recover: true, Epoch: last.Epoch, Offset: 2})
	if !res.Recovered || !res.WasRecovering || len(res.Publications) != 3 || res.Publications[0].Offset != 3 || res.Offset != 2 || res.Epoch != last.Epoch {
		t.Fatalf("recovery %+v", res)
	}
	// Live publications follow without a gap.
	e.h.Publish(bg, "hist:a", []byte(`6`), PublishOptions{})
	if f := p.next(); f.O != 6 {
		t.Fatalf("live %+v", f)
	}
	// Another epoch cannot be recovered.
	p2 := e.connect(dialOptions{})
	res = p2.subscribe(e.h, SubscribeRequest{Channel: "hist:a", Recover: true, Epoch: "other", Offset: 2})
	if res.Recovered || len(res.Publications) != 0 || res.Offset != 6 || !res.WasRecovering {
		t.Fatalf("epoch mismatch %+v", res)
	}
	// Neither can a position older than the history.
	for i := 7; i <= 120; i++ {
		e.h.Publish(bg, "hist:a", []byte(fmt.Sprint(i)), PublishOptions{})
	}
	p3 := e.connect(dialOptions{})
	res = p3.subscribe(e.h, SubscribeRequest{Channel: "hist:a", Recover: true, Epoch: last.Epoch, Offset: 5})
	if res.Recovered || res.Offset != 120 {
		t.Fatalf("trimmed %+v", res)
	}
	p4 := e.connect(dialOptions{})
	err := e.h.Subscribe(bg, p4.c, SubscribeRequest{Channel: "hist:a", Recover: true, Epoch: last.Epoch, Offset: 5, RejectUnrecovered: true}, func(*SubscribeResult) error { return nil })
	if !isCode(err, ErrorUnrecoverablePosition.Code) {
		t.Fatalf("reject unrecovered: %v", err)
	}
	// Up to date: recovered with nothing to send.
	res = p4.subscribe(e.h, SubscribeRequest{Channel: "hist:a", Recover: true, Epoch: last.Epoch, Offset: 120})
	if !res.Recovered || len(res.Publications) != 0 {
		t.Fatalf("up to date %+v", res)
	}
}

// Publications made while a client subscribes are neither lost nor
// repeated, and always come after the subscribe reply.
func TestSubscribeDuringPublishing(t *testing.T) {
	e := newEnv(t, envOptions{cfg: openCfg()})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			e.h.Publish(bg, "hist:busy", []byte(`{}`), PublishOptions{})
		}
	}()
	for round := 0; round < 20; round++ {
		p := e.connect(dialOptions{})
		var res *SubscribeResult
		err := e.h.Subscribe(bg, p.c, SubscribeRequest{Channel: "hist:busy", Recover: true, Offset: 0}, func(r *SubscribeResult) error {
			res = r
			// The reply is written here: nothing may have been written yet.
			select {
			case f := <-p.frames:
				t.Errorf("publication %+v before the reply", f)
			default:
			}
			time.Sleep(time.Millisecond) // let publications pile up
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		next := res.Offset + 1
		if res.Recovered {
			for _, pub := range res.Publications {
				if pub.Offset != next {
					t.Fatalf("recovered offset %d, want %d", pub.Offset, next)
				}
				next++
			}
		}
		for i := 0; i < 20; i++ {
			f := p.next()
			if f.O != next {
				t.Fatalf("round %d: offset %d, want %d", round, f.O, next)
			}
			next++
		}
		p.conn.CloseNow()
	}
	close(stop)
	wg.Wait()
}

// A publication that arrives while its subscriber is still subscribing is
// kept and written once the subscription is live: it counts as a delivery
// like any other.
func TestDeliveriesCountKeptPublications(t *testing.T) {
	e := newEnv(t, envOptions{cfg: openCfg()})
	p := e.connect(dialOptions{})
	err := e.h.Subscribe(bg, p.c, SubscribeRequest{Channel: "hist:kept", Recover: true}, func(*SubscribeResult) error {
		if _, err := e.h.Publish(bg, "hist:kept", []byte(`{}`), PublishOptions{}); err != nil {
			t.Error(err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if f := p.next(); f.O != 1 {
		t.Fatalf("got offset %d, want the kept publication at 1", f.O)
	}
	waitFor(t, "the kept publication to be counted", func() bool { return e.h.Stats().Deliveries == 1 })
}

func TestInsufficientStateOnGap(t *testing.T) {
	lb := &lossyBroker{Memory: broker.NewMemory(broker.MemoryConfig{})}
	var dropping sync.Mutex
	dropOffset := uint64(0)
	lb.drop = func(ch string, pub *broker.Publication) bool {
		dropping.Lock()
		defer dropping.Unlock()
		return pub.Offset == dropOffset
	}
	cfg := openCfg()
	cfg.Broker = lb
	cfg.Tokens = fakeTokens{}
	e := newEnv(t, envOptions{cfg: cfg})
	p := e.connect(dialOptions{})
	p.subscribe(e.h, SubscribeRequest{Channel: "hist:g"})
	server := e.dial(dialOptions{})
	if err := e.h.Connect(bg, server.c, ConnectRequest{Token: "u::hist:g"}, func(*ConnectResult) error { return nil }); err != nil {
		t.Fatal(err)
	}
	e.h.Publish(bg, "hist:g", []byte(`1`), PublishOptions{})
	if f := p.next(); f.O != 1 {
		t.Fatal(f)
	}
	server.next()
	dropping.Lock()
	dropOffset = 2
	dropping.Unlock()
	e.h.Publish(bg, "hist:g", []byte(`2`), PublishOptions{})
	e.h.Publish(bg, "hist:g", []byte(`3`), PublishOptions{})
	// The client-side subscription ends with an unsubscribe push (it will
	// resubscribe and recover); 3 is not delivered after the gap.
	if f := p.next(); f.T != "unsub" || f.Code != UnsubscribeInsufficientState.Code {
		t.Fatalf("got %+v", f)
	}
	waitFor(t, "unsubscribed", func() bool { return !p.c.IsSubscribed("hist:g") })
	// The server-side one closes the connection.
	if code := server.closeCode(); code != 3010 {
		t.Fatalf("server-side subscription: close %d", code)
	}
	if n := e.h.Stats().InsufficientState; n != 2 {
		t.Fatalf("insufficient state count %d", n)
	}
}

func TestInsufficientStateOnGapReport(t *testing.T) {
	lb := &lossyBroker{Memory: broker.NewMemory(broker.MemoryConfig{})}
	lb.drop = func(ch string, pub *broker.Publication) bool { return pub.Offset == 2 }
	cfg := openCfg()
	cfg.Broker = lb
	e := newEnv(t, envOptions{cfg: cfg})
	p := e.connect(dialOptions{})
	p.subscribe(e.h, SubscribeRequest{Channel: "hist:r"})
	e.h.Publish(bg, "hist:r", []byte(`1`), PublishOptions{})
	p.next()
	e.h.Publish(bg, "hist:r", []byte(`2`), PublishOptions{}) // lost in delivery, nothing follows
	p.none(20 * time.Millisecond)
	e.h.HandleGap([]string{"hist:r"})
	if f := p.next(); f.T != "unsub" || f.Code != 2500 {
		t.Fatalf("got %+v", f)
	}
}

func TestPeriodicPositionCheck(t *testing.T) {
	lb := &lossyBroker{Memory: broker.NewMemory(broker.MemoryConfig{})}
	lb.drop = func(ch string, pub *broker.Publication) bool { return pub.Offset == 2 }
	cfg := openCfg()
	cfg.Broker = lb
	cfg.PositionCheckInterval = 30 * time.Millisecond
	e := newEnv(t, envOptions{cfg: cfg})
	p := e.connect(dialOptions{})
	p.subscribe(e.h, SubscribeRequest{Channel: "hist:p"})
	e.h.Publish(bg, "hist:p", []byte(`1`), PublishOptions{})
	p.next()
	e.h.Publish(bg, "hist:p", []byte(`2`), PublishOptions{})
	// Two checks later the subscriber is known to be behind.
	if f := p.next(); f.T != "unsub" || f.Code != 2500 {
		t.Fatalf("got %+v", f)
	}
	// An up-to-date subscriber is left alone.
	p2 := e.connect(dialOptions{})
	p2.subscribe(e.h, SubscribeRequest{Channel: "hist:p"})
	p2.none(150 * time.Millisecond)
}

func TestPresenceAndJoinLeave(t *testing.T) {
	mem := broker.NewMemory(broker.MemoryConfig{PresenceTTL: 200 * time.Millisecond})
	cfg := openCfg()
	cfg.Broker = mem
	cfg.Tokens = fakeTokens{}
	cfg.PresenceUpdateInterval = 40 * time.Millisecond
	e := newEnv(t, envOptions{cfg: cfg})
	a := e.dial(dialOptions{})
	if err := e.h.Connect(bg, a.c, ConnectRequest{Token: "alice"}, func(*ConnectResult) error { return nil }); err != nil {
		t.Fatal(err)
	}
	a.subscribe(e.h, SubscribeRequest{Channel: "pres:room"})
	if f := a.next(); f.T != "join" || f.Client != a.c.ID() {
		t.Fatalf("own join %+v", f)
	}
	b := e.connect(dialOptions{})
	b.subscribe(e.h, SubscribeRequest{Channel: "pres:room"})
	if f := a.next(); f.T != "join" || f.Client != b.c.ID() {
		t.Fatalf("join %+v", f)
	}
	st, err := e.h.ClientPresenceStats(bg, a.c, "pres:room")
	if err != nil || st != (broker.PresenceStats{NumClients: 2, NumUsers: 2}) {
		t.Fatalf("stats %+v %v", st, err)
	}
	// Refreshed past the TTL while connected.
	time.Sleep(400 * time.Millisecond)
	pr, err := e.h.ClientPresence(bg, b.c, "pres:room")
	if err != nil || len(pr) != 2 || pr[a.c.ID()].UserID != "alice" {
		t.Fatalf("presence %+v %v", pr, err)
	}
	// Not a subscriber: denied; no presence in the namespace: not available.
	c := e.connect(dialOptions{})
	if _, err := e.h.ClientPresence(bg, c.c, "pres:room"); !isCode(err, ErrorPermissionDenied.Code) {
		t.Fatalf("non-subscriber: %v", err)
	}
	if _, err := e.h.ClientPresence(bg, c.c, "news"); !isCode(err, ErrorNotAvailable.Code) {
		t.Fatalf("no presence: %v", err)
	}
	b.conn.CloseNow()
	if f := a.next(); f.T != "leave" || f.Client != b.c.ID() {
		t.Fatalf("leave %+v", f)
	}
	waitFor(t, "presence removed", func() bool {
		st, _ := e.h.PresenceStats(bg, "pres:room")
		return st.NumClients == 1
	})
}

func TestCallbacks(t *testing.T) {
	cfg := openCfg()
	cfg.AllowAnonymous = false
	var disconnects sync.Map
	var h *Hub
	cfg.Callbacks = Callbacks{
		OnConnecting: func(ctx context.Context, e ConnectEvent) (ConnectReply, error) {
			if string(e.Data) == `"deny"` {
				return ConnectReply{}, ErrorPermissionDenied
			}
			return ConnectReply{
				Credentials:   &Credentials{UserID: "cb-user", Info: []byte(`{"x":1}`)},
				Subscriptions: map[string]SubscribeOptions{"granted": {}},
				Data:          []byte(`"welcome"`),
			}, nil
		},
		OnSubscribe: func(ctx context.Context, c *Client, e SubscribeEvent) (SubscribeReply, error) {
			// Callbacks may use the hub.
			h.Stats()
			if e.Channel == "closed:vip" {
				return SubscribeReply{Options: &SubscribeOptions{ChanInfo: []byte(`"vip"`)}}, nil
			}
			if !e.Allowed {
				return SubscribeReply{}, &Error{Code: 403, Message: "custom"}
			}
			return SubscribeReply{}, nil
		},
		OnPublish: func(ctx context.Context, c *Client, e PublishEvent) (PublishReply, error) {
			if e.Channel == "closed:vip" {
				return PublishReply{Data: []byte(`"rewritten"`)}, nil
			}
			return PublishReply{}, Disconnect{4000, "no"}
		},
		OnRPC: func(ctx context.Context, c *Client, e RPCEvent) (RPCReply, error) {
			if e.Method != "echo" {
				return RPCReply{}, ErrorMethodNotFound
			}
			return RPCReply{Data: e.Data}, nil
		},
		OnDisconnect: func(c *Client, d Disconnect) {
			if _, loaded := disconnects.LoadOrStore(c.ID(), d); loaded {
				t.Errorf("OnDisconnect twice for %s", c.ID())
			}
		},
	}
	e := newEnv(t, envOptions{cfg: cfg})
	h = e.h
	p := e.dial(dialOptions{})
	if err := e.h.Connect(bg, p.c, ConnectRequest{Data: []byte(`"deny"`)}, func(*ConnectResult) error { return nil }); !isCode(err, 103) {
		t.Fatalf("denied connect: %v", err)
	}
	p = e.dial(dialOptions{})
	var res *ConnectResult
	if err := e.h.Connect(bg, p.c, ConnectRequest{}, func(r *ConnectResult) error { res = r; return nil }); err != nil {
		t.Fatal(err)
	}
	if string(res.Data) != `"welcome"` || res.Subs["granted"] == nil || p.c.UserID() != "cb-user" {
		t.Fatalf("connect result %+v", res)
	}
	if err := e.h.Subscribe(bg, p.c, SubscribeRequest{Channel: "closed:x"}, func(*SubscribeResult) error { return nil }); !isCode(err, 403) {
		t.Fatalf("callback rejection: %v", err)
	}
	p.subscribe(e.h, SubscribeRequest{Channel: "closed:vip"})
	if err := e.h.ClientPublish(bg, p.c, "closed:vip", []byte(`"orig"`)); err != nil {
		t.Fatal(err)
	}
	if f := p.next(); string(f.D) != `"rewritten"` || f.From != p.c.ID() {
		t.Fatalf("publication %+v", f)
	}
	if err := e.h.ClientPublish(bg, p.c, "news", []byte(`1`)); !isCode(err, 4000) {
		t.Fatalf("publish rejection: %v", err)
	}
	if out, err := e.h.RPC(bg, p.c, "echo", []byte(`[1]`)); err != nil || string(out) != `[1]` {
		t.Fatalf("rpc %s %v", out, err)
	}
	if _, err := e.h.RPC(bg, p.c, "other", nil); !isCode(err, 104) {
		t.Fatalf("rpc unknown method: %v", err)
	}
	p.c.Disconnect(DisconnectForceNoReconnect)
	if code := p.closeCode(); code != 3503 {
		t.Fatalf("close code %d", code)
	}
	waitFor(t, "OnDisconnect", func() bool {
		d, ok := disconnects.Load(p.c.ID())
		return ok && d.(Disconnect) == DisconnectForceNoReconnect
	})
}

func TestPingsPongsStaleAndExpiry(t *testing.T) {
	cfg := openCfg()
	cfg.Tokens = fakeTokens{}
	cfg.PingInterval = 40 * time.Millisecond
	cfg.PongTimeout = 30 * time.Millisecond
	cfg.StaleCloseDelay = 50 * time.Millisecond
	cfg.ExpiredCloseDelay = time.Second
	e := newEnv(t, envOptions{cfg: cfg})
	// A client that answers pings stays.
	good := e.connect(dialOptions{})
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case f := <-good.frames:
				if f.T == "ping" {
					good.c.Pong()
				}
			case <-stop:
				return
			}
		}
	}()
	// One that does not is closed with 3012.
	silent := e.connect(dialOptions{})
	if code := silent.closeCode(); code != 3012 {
		t.Fatalf("no pong: close %d", code)
	}
	if fresh := e.connect(dialOptions{}); fresh.c.Pong() {
		t.Fatal("pong accepted without a ping")
	}
	// One that never connects is stale.
	stale := e.dial(dialOptions{})
	if code := stale.closeCode(); code != 3502 {
		t.Fatalf("stale: close %d", code)
	}
	// An expiring connection is closed after the grace period.
	exp := e.dial(dialOptions{})
	go func() {
		for {
			select {
			case f := <-exp.frames:
				if f.T == "ping" {
					exp.c.Pong()
				}
			case <-stop:
				return
			}
		}
	}()
	if err := e.h.Connect(bg, exp.c, ConnectRequest{Token: fmt.Sprintf("u:%d:", time.Now().Unix()+1)}, func(*ConnectResult) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if code := exp.closeCode(); code != 3005 {
		t.Fatalf("expired: close %d", code)
	}
	select {
	case err := <-good.closed:
		t.Fatalf("the client answering pings was closed: %v", err)
	default:
	}
}

func TestServerSideOps(t *testing.T) {
	cfg := openCfg()
	cfg.Tokens = fakeTokens{}
	e := newEnv(t, envOptions{cfg: cfg})
	a1 := e.dial(dialOptions{})
	a2 := e.dial(dialOptions{})
	for _, p := range []*peer{a1, a2} {
		if err := e.h.Connect(bg, p.c, ConnectRequest{Token: "ann"}, func(*ConnectResult) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.h.SubscribeUser(bg, "ann", "hist:s", ServerSubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*peer{a1, a2} {
		if f := p.next(); f.T != "sub" || f.Ch != "hist:s" {
			t.Fatalf("subscribe push %+v", f)
		}
	}
	res, err := e.h.Broadcast(bg, []string{"hist:s", "news", "nope:x"}, []byte(`"b"`), PublishOptions{})
	if err != nil || res[0].Err != nil || res[0].Position.Offset != 1 || res[1].Err != nil || !isCode(res[2].Err, 102) {
		t.Fatalf("broadcast %+v %v", res, err)
	}
	if f := a1.next(); f.T != "pub" || f.O != 1 {
		t.Fatalf("%+v", f)
	}
	a2.next()
	chans, _ := e.h.Channels("hist:*")
	if len(chans) != 1 || chans["hist:s"] != 2 {
		t.Fatalf("channels %v", chans)
	}
	if err := e.h.UnsubscribeUser(bg, "ann", "hist:s", a1.c.ID()); err != nil {
		t.Fatal(err)
	}
	if f := a1.next(); f.T != "unsub" || f.Code != 2000 {
		t.Fatalf("unsubscribe push %+v", f)
	}
	if a1.c.IsSubscribed("hist:s") || !a2.c.IsSubscribed("hist:s") {
		t.Fatal("unsubscribe hit the wrong client")
	}
	hr, err := e.h.History(bg, "hist:s", HistoryRequest{Limit: -1})
	if err != nil || len(hr.Publications) != 1 || hr.Offset != 1 {
		t.Fatalf("history %+v %v", hr, err)
	}
	if _, err := e.h.History(bg, "hist:s", HistoryRequest{Since: &broker.StreamPosition{Epoch: "x", Offset: 1}}); !isCode(err, 112) {
		t.Fatalf("history other epoch: %v", err)
	}
	if _, err := e.h.History(bg, "news", HistoryRequest{}); !isCode(err, 108) {
		t.Fatalf("history without history: %v", err)
	}
	if err := e.h.RemoveHistory(bg, "hist:s"); err != nil {
		t.Fatal(err)
	}
	e.h.DisconnectUser(bg, "ann", DisconnectForceReconnect, "", []string{a2.c.ID()})
	if code := a1.closeCode(); code != 3011 {
		t.Fatalf("disconnect user: %d", code)
	}
	select {
	case <-a2.closed:
		t.Fatal("whitelisted client disconnected")
	case <-time.After(20 * time.Millisecond):
	}
	info := e.h.Info()
	if info.NumClients != 1 || info.ID == "" {
		t.Fatalf("info %+v", info)
	}
	// A single-node broker: the cluster is this node.
	if nodes := e.h.Nodes(); len(nodes) != 1 || nodes[0].ID != info.ID || nodes[0].NumClients != 1 {
		t.Fatalf("nodes %+v, want only this one", nodes)
	}
}

func TestShutdownDrains(t *testing.T) {
	h, err := New(bg, Config{AllowAnonymous: true, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, h: h, codec: &testCodec{}, clients: make(chan *Client, 10)}
	e.opts.SendQueuePolicy = 2
	e.opts.PingInterval = -1
	srv := newServer(e)
	defer srv.Close()
	e.srv = srv
	p := e.connect(dialOptions{})
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	if err := h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if code := p.closeCode(); code != 3001 {
		t.Fatalf("close %d", code)
	}
	if h.NewClient(nil, e.codec) != nil {
		t.Fatal("NewClient after Shutdown")
	}
	if h.Go(func() {}) {
		t.Fatal("Go after Shutdown")
	}
}

// Subscribers leave and join a big channel: the list is compacted without
// losing or repeating anyone.
func TestChannelChurn(t *testing.T) {
	cfg := openCfg()
	cfg.PingInterval = -1
	e := newEnv(t, envOptions{cfg: cfg})
	var peers []*peer
	for i := 0; i < 100; i++ {
		p := e.connect(dialOptions{})
		p.subscribe(e.h, SubscribeRequest{Channel: "big"})
		peers = append(peers, p)
	}
	for _, p := range peers[:60] {
		if err := e.h.Unsubscribe(bg, p.c, "big"); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range peers[:10] {
		p.subscribe(e.h, SubscribeRequest{Channel: "big"})
	}
	if chans, _ := e.h.Channels(""); chans["big"] != 50 {
		t.Fatalf("channels %v", chans)
	}
	e.h.Publish(bg, "big", []byte(`1`), PublishOptions{})
	for i, p := range peers {
		if i >= 10 && i < 60 {
			p.none(time.Millisecond)
			continue
		}
		if f := p.next(); f.T != "pub" {
			t.Fatalf("peer %d: %+v", i, f)
		}
	}
	if st := e.h.Stats(); st.Subscriptions != 50 || st.Deliveries != 50 {
		t.Fatalf("stats %+v", st)
	}
	for _, p := range peers {
		p.conn.CloseNow()
	}
	waitFor(t, "the channel to go", func() bool { return e.h.Stats().Channels == 0 })
}

// Go keeps at most maxIdleWorkers goroutines between functions, hands the
// next function to one of them, and Shutdown ends them (TestMain's goleak
// check sees any left).
func TestGoKeepsWarmWorkers(t *testing.T) {
	h, err := New(bg, Config{AllowAnonymous: true, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	const n = maxIdleWorkers + 36
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range n {
		wg.Add(1)
		if !h.Go(func() { defer wg.Done(); <-release }) {
			t.Fatal("Go refused before Shutdown")
		}
	}
	close(release)
	wg.Wait()
	waitFor(t, "the idle workers to settle", func() bool { return h.idle.Load() == maxIdleWorkers })
	before := runtime.NumGoroutine()
	ran := make(chan struct{})
	h.Go(func() { close(ran) })
	<-ran
	if after := runtime.NumGoroutine(); after > before {
		t.Errorf("%d goroutines after Go with idle workers, %d before: a new one was started", after, before)
	}
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	if err := h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.idle.Load(); got != 0 {
		t.Fatalf("%d idle workers after Shutdown", got)
	}
	if h.Go(func() {}) {
		t.Fatal("Go ran a function after Shutdown")
	}
}
