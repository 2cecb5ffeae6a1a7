package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/wsgate/wsgate"
)

// hubOptions shape the in-test pub/sub server.
type hubOptions struct {
	apiKey    string // required X-API-Key of /api/publish ("" accepts any)
	coalesce  bool   // send publications 3 to a frame (the rest after 200 ms), with a ping
	noPublish bool   // refuse client publishes with 103 permission denied
	noReply   bool   // publish without ever answering the publisher
	// Faults applied to the first subscriber only, on publication index
	// faultAt (counted from the server's start).
	lose, duplicate, reorder bool
	faultAt                  int
	// publishLimit disconnects a client with 3013 "too many requests" when
	// it sends more publish commands than this (0: no limit).
	publishLimit int
}

// testHub is a small server speaking the subset of Centrifugo's client
// protocol the pubsub mode uses, on /connection/websocket and
// /api/publish.
type testHub struct {
	opts  hubOptions
	url   string
	pongs atomic.Int64

	mu        sync.Mutex
	subs      []*wsgate.Conn
	pending   [][]byte
	timer     *time.Timer
	pubs      int
	held      []byte // reorder: the publication held back for the first subscriber
	clientID  int
	published map[*wsgate.Conn]int // publish commands per connection
}

func newTestHub(t *testing.T, opts hubOptions) *testHub {
	t.Helper()
	h := &testHub{opts: opts}
	mux := http.NewServeMux()
	mux.HandleFunc("/connection/websocket", h.serveWS)
	mux.HandleFunc("POST /api/publish", h.serveAPI)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		h.mu.Lock()
		if h.timer != nil {
			h.timer.Stop()
		}
		h.mu.Unlock()
	})
	h.url = "ws" + strings.TrimPrefix(srv.URL, "http") + "/connection/websocket"
	return h
}

func (h *testHub) serveWS(w http.ResponseWriter, r *http.Request) {
	wsgate.Upgrade(w, r, &wsgate.Options{
		PingInterval: -1,
		OnMessage:    h.onCommand,
		OnClose: func(c *wsgate.Conn, _ error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			for i, s := range h.subs {
				if s == c {
					h.subs = append(h.subs[:i], h.subs[i+1:]...)
					break
				}
			}
		},
	})
}

func reply(c *wsgate.Conn, r *protocol.Reply) {
	b, err := protocol.NewJSONReplyEncoder().Encode(r)
	if err != nil {
		panic(err)
	}
	c.Write(context.Background(), wsgate.TextMessage, b)
}

func (h *testHub) onCommand(c *wsgate.Conn, _ wsgate.MessageType, data []byte) {
	dec := protocol.NewJSONCommandDecoder(data)
	for {
		cmd, err := dec.Decode()
		if cmd != nil {
			h.handle(c, cmd)
		}
		if err != nil {
			return
		}
	}
}

func (h *testHub) handle(c *wsgate.Conn, cmd *protocol.Command) {
	switch {
	case cmd.Id == 0:
		h.pongs.Add(1)
	case cmd.Connect != nil:
		h.mu.Lock()
		h.clientID++
		id := fmt.Sprint(h.clientID)
		h.mu.Unlock()
		reply(c, &protocol.Reply{Id: cmd.Id, Connect: &protocol.ConnectResult{Client: id, Version: "test", Ping: 25, Pong: true}})
	case cmd.Subscribe != nil:
		h.mu.Lock()
		h.subs = append(h.subs, c)
		h.mu.Unlock()
		reply(c, &protocol.Reply{Id: cmd.Id, Subscribe: &protocol.SubscribeResult{}})
	case cmd.Publish != nil:
		h.mu.Lock()
		if h.published == nil {
			h.published = map[*wsgate.Conn]int{}
		}
		h.published[c]++
		flood := h.opts.publishLimit > 0 && h.published[c] > h.opts.publishLimit
		h.mu.Unlock()
		if flood {
			c.CloseWithStatus(3013, "too many requests")
			return
		}
		if h.opts.noPublish {
			reply(c, &protocol.Reply{Id: cmd.Id, Error: &protocol.Error{Code: 103, Message: "permission denied"}})
			return
		}
		h.broadcast(cmd.Publish.Channel, cmd.Publish.Data)
		if !h.opts.noReply {
			reply(c, &protocol.Reply{Id: cmd.Id, Publish: &protocol.PublishResult{}})
		}
	default:
		reply(c, &protocol.Reply{Id: cmd.Id, Error: &protocol.Error{Code: 104, Message: "method not found"}})
	}
}

func (h *testHub) serveAPI(w http.ResponseWriter, r *http.Request) {
	if h.opts.apiKey != "" && r.Header.Get("X-API-Key") != h.opts.apiKey {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	var req struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		w.Write([]byte(`{"error":{"code":107,"message":"bad request"}}`))
		return
	}
	h.broadcast(req.Channel, req.Data)
	w.Write([]byte(`{"result":{}}`))
}

// broadcast sends a publication to every subscriber.
func (h *testHub) broadcast(channel string, data []byte) {
	push, err := protocol.NewJSONReplyEncoder().Encode(&protocol.Reply{Push: &protocol.Push{
		Channel: channel, Pub: &protocol.Publication{Data: data},
	}})
	if err != nil {
		panic(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	idx := h.pubs
	h.pubs++
	if !h.opts.coalesce {
		for i, c := range h.subs {
			h.send(c, i == 0, idx, push)
		}
		return
	}
	h.pending = append(h.pending, push)
	if len(h.pending) >= 3 {
		h.flushLocked()
	} else if h.timer == nil {
		h.timer = time.AfterFunc(200*time.Millisecond, func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.flushLocked()
		})
	}
}

// send writes one publication to a subscriber, with the faults asked for.
func (h *testHub) send(c *wsgate.Conn, first bool, idx int, push []byte) {
	write := func(b []byte) { c.Write(context.Background(), wsgate.TextMessage, b) }
	if !first || idx != h.opts.faultAt && h.held == nil {
		write(push)
		return
	}
	switch {
	case h.held != nil:
		write(push)
		write(h.held)
		h.held = nil
	case h.opts.lose:
	case h.opts.duplicate:
		write(push)
		write(push)
	case h.opts.reorder:
		h.held = push
	default:
		write(push)
	}
}

// flushLocked sends the pending publications as one frame, with a ping.
func (h *testHub) flushLocked() {
	if h.timer != nil {
		h.timer.Stop()
		h.timer = nil
	}
	if len(h.pending) == 0 {
		return
	}
	frame := append(bytes.Join(h.pending, []byte("\n")), "\n{}"...)
	h.pending = nil
	for _, c := range h.subs {
		c.Write(context.Background(), wsgate.TextMessage, frame)
	}
}

// pubsubCfg is a short run against an in-test hub. MaxLag is generous: a
// loaded test machine may stall the server or the generator for a while,
// and these tests are about correctness, not speed.
func pubsubCfg(url string, measure Measure) Config {
	return Config{
		Mode: ModePubSub, Measure: measure, URL: url, N: 5, Size: 64,
		Duration: 200 * time.Millisecond, Deliveries: 1000, MaxLag: 10 * time.Second,
	}
}

func TestPubSubRate(t *testing.T) {
	h := newTestHub(t, hubOptions{})
	cfg := pubsubCfg(h.url, MeasureRate)
	cfg.PID = os.Getpid()
	rep := run(t, cfg)
	noErrors(t, rep)
	ps := rep.PubSub
	if ps == nil || ps.Best != 0 || len(ps.Steps) != 1 {
		t.Fatalf("pubsub report %+v", ps)
	}
	st := ps.Steps[0]
	if !st.Pass || st.Subscribers != 5 || st.Publications == 0 || st.Delivered != st.Expected || st.Expected != 5*st.Publications {
		t.Errorf("step %+v", st)
	}
	if rep.Messages != st.Delivered || rep.MsgsPerSec <= 0 || rep.Latency == nil || rep.Latency.Count != st.Delivered {
		t.Errorf("messages %d, rate %v, latency %+v", rep.Messages, rep.MsgsPerSec, rep.Latency)
	}
	if rep.Server == nil || rep.Server.RSSAfterKiB == 0 {
		t.Errorf("no server stats: %+v", rep.Server)
	}
}

func TestPubSubAPICoalesced(t *testing.T) {
	h := newTestHub(t, hubOptions{apiKey: "secret", coalesce: true})
	cfg := pubsubCfg(h.url, MeasureRate)
	cfg.Publish, cfg.APIKey, cfg.Size = PublishAPI, "secret", 1024
	rep := run(t, cfg)
	noErrors(t, rep)
	st := rep.PubSub.Steps[0]
	if !st.Pass || st.Delivered != st.Expected || st.Expected == 0 {
		t.Errorf("step %+v", st)
	}
	if st.Frames == 0 || st.Frames >= st.Delivered {
		t.Errorf("%d frames for %d deliveries: the coalesced frames were not counted as such", st.Frames, st.Delivered)
	}
	if h.pongs.Load() == 0 {
		t.Error("the pings coalesced with the publications got no pong")
	}
}

func TestPubSubAPIKeyRefused(t *testing.T) {
	h := newTestHub(t, hubOptions{apiKey: "secret"})
	cfg := pubsubCfg(h.url, MeasureRate)
	cfg.Publish, cfg.APIKey = PublishAPI, "wrong"
	rep := run(t, cfg)
	if rep.PubSub.Steps[0].Pass || !hasErrorLike(rep, "publish: API", "HTTP 401") {
		t.Errorf("a refused API key went unnoticed: %+v", rep.Errors)
	}
}

func TestPubSubClientPublishRefused(t *testing.T) {
	h := newTestHub(t, hubOptions{noPublish: true})
	cfg := pubsubCfg(h.url, MeasureMax)
	cfg.MaxSteps = 2
	rep := run(t, cfg)
	if rep.PubSub.Best != -1 || !hasErrorLike(rep, "publish: error 103 permission denied", "") || !hasErrorLike(rep, "pubsub: no step passed", "") {
		t.Errorf("best %d, errors %+v", rep.PubSub.Best, rep.Errors)
	}
}

func hasErrorLike(rep *Report, kind, example string) bool {
	for _, e := range rep.Errors {
		if e.Kind == kind && strings.Contains(e.Example, example) {
			return true
		}
	}
	return false
}

func TestPubSubFaults(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		opts                 hubOptions
		lost, dup, reordered uint64
	}{
		{"lost", hubOptions{lose: true, faultAt: 3}, 1, 0, 0},
		{"duplicated", hubOptions{duplicate: true, faultAt: 3}, 0, 1, 0},
		{"reordered", hubOptions{reorder: true, faultAt: 3}, 0, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHub(t, tc.opts)
			rep := run(t, pubsubCfg(h.url, MeasureRate))
			st := rep.PubSub.Steps[0]
			if st.Lost != tc.lost || st.Duplicated != tc.dup || st.Reordered != tc.reordered || st.Pass {
				t.Errorf("lost %d, duplicated %d, reordered %d, pass %v; want %d, %d, %d, fail",
					st.Lost, st.Duplicated, st.Reordered, st.Pass, tc.lost, tc.dup, tc.reordered)
			}
			if rep.ErrorCount == 0 {
				t.Error("a fixed-rate run with faults reported no error")
			}
		})
	}
}

func TestPubSubMax(t *testing.T) {
	h := newTestHub(t, hubOptions{coalesce: true})
	cfg := pubsubCfg(h.url, MeasureMax)
	cfg.N, cfg.Deliveries, cfg.MaxSteps = 4, 400, 2
	rep := run(t, cfg)
	noErrors(t, rep)
	ps := rep.PubSub
	if len(ps.Steps) != 2 || ps.Steps[1].OfferedPerSec != 800 {
		t.Fatalf("steps %+v, want 400 then 800 deliveries/s", ps.Steps)
	}
	if ps.Best < 0 || rep.MsgsPerSec != ps.Steps[ps.Best].DeliveriesPerSec || rep.Messages != ps.Steps[ps.Best].Delivered {
		t.Errorf("best %d, rate %v, messages %d: %+v", ps.Best, rep.MsgsPerSec, rep.Messages, ps.Steps)
	}
}

// TestPubSubPublisherReconnected: a server that disconnects a publisher
// sending too many publications fails the step; the search reconnects the
// publisher and goes on below.
func TestPubSubPublisherReconnected(t *testing.T) {
	h := newTestHub(t, hubOptions{publishLimit: 60})
	cfg := pubsubCfg(h.url, MeasureMax)
	cfg.N, cfg.Deliveries, cfg.MaxSteps = 4, 800, 3 // 40, 80, 56 publications
	rep := run(t, cfg)
	ps := rep.PubSub
	if len(ps.Steps) != 3 || ps.PublisherReconnected != 1 {
		t.Fatalf("%d steps, publisher reconnected %d times: %+v", len(ps.Steps), ps.PublisherReconnected, ps.Steps)
	}
	if st := ps.Steps[1]; st.Pass || !strings.Contains(st.Failure, "publisher was disconnected (closed by server: 3013)") {
		t.Errorf("step 2: %+v", st)
	}
	if ps.Best < 0 || !ps.Steps[2].Pass {
		t.Errorf("no passing step after the reconnect: %+v", ps.Steps)
	}
}

// TestPubSubPublishWindow: a client publisher keeps at most PublishWindow
// publishes awaiting their reply, and gives up on a server that never
// answers.
func TestPubSubPublishWindow(t *testing.T) {
	h := newTestHub(t, hubOptions{noReply: true})
	cfg := pubsubCfg(h.url, MeasureRate)
	cfg.PublishWindow, cfg.DialTimeout = 4, 300*time.Millisecond
	rep := run(t, cfg)
	st := rep.PubSub.Steps[0]
	if st.Publications != 4 || st.Delivered != 4*5 || st.Pass {
		t.Errorf("step %+v, want 4 publications delivered, then a failure", st)
	}
	if !hasErrorLike(rep, "publish: no reply", "4 publishes unanswered") {
		t.Errorf("errors %+v", rep.Errors)
	}
}

// TestSearchMax drives the search with a fake server that keeps up to
// 1,600 deliveries/s and loses above.
func TestSearchMax(t *testing.T) {
	for _, tc := range []struct {
		name      string
		start     float64
		behind    bool // above the limit, pass but behind schedule instead of failing
		wantSteps []float64
	}{
		{"up then bisect", 400, false, []float64{400, 800, 1600, 3200, 2263, 1903, 1745}},
		{"behind counts as out of reach", 400, true, []float64{400, 800, 1600, 3200, 2263, 1903, 1745}},
		{"down from too high", 6400, false, []float64{6400, 3200, 1600, 2263, 1903, 1745}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Deliveries: tc.start, Growth: 2, Precision: 0.1, MaxSteps: 12}
			var rep PubSubReport
			best := searchMax(context.Background(), &cfg, &rep, func(_ int, rate float64) PubSubStep {
				st := PubSubStep{OfferedPerSec: rate, Subscribers: 4, DeliveriesPerSec: min(rate, 1600), Pass: true}
				if rate > 1600 {
					if tc.behind {
						st.Behind = "behind"
					} else {
						st.Pass, st.Failure = false, "lost"
					}
				}
				return st
			})
			var got []float64
			for _, st := range rep.Steps {
				got = append(got, math.Round(st.OfferedPerSec))
			}
			if !slices.Equal(got, tc.wantSteps) {
				t.Errorf("offered rates %v, want %v", got, tc.wantSteps)
			}
			if best < 0 || rep.Steps[best].DeliveriesPerSec != 1600 {
				t.Errorf("best step %d: %+v", best, rep.Steps)
			}
		})
	}
}

func TestPubSubIdle(t *testing.T) {
	h := newTestHub(t, hubOptions{})
	cfg := pubsubCfg(h.url, MeasureIdle)
	cfg.N, cfg.Hold, cfg.PID = 30, 100*time.Millisecond, os.Getpid()
	rep := run(t, cfg)
	noErrors(t, rep)
	if rep.Established != 30 || rep.Held != 30 {
		t.Errorf("established %d, held %d, want 30", rep.Established, rep.Held)
	}
	if rep.Server == nil || rep.Server.RSSBeforeKiB == 0 {
		t.Errorf("no RSS: %+v", rep.Server)
	}
}

func TestPubSubConnect(t *testing.T) {
	h := newTestHub(t, hubOptions{})
	cfg := pubsubCfg(h.url, MeasureConnect)
	cfg.Conns, cfg.Duration, cfg.PID = 2, 300*time.Millisecond, os.Getpid()
	rep := run(t, cfg)
	noErrors(t, rep)
	if rep.Messages == 0 || rep.ConnectsPerSec <= 0 || rep.ServerCPUPerOpUS <= 0 {
		t.Errorf("cycles %d, rate %v, server µs per cycle %v", rep.Messages, rep.ConnectsPerSec, rep.ServerCPUPerOpUS)
	}
}

func TestPubSubMainJSON(t *testing.T) {
	h := newTestHub(t, hubOptions{})
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"pubsub", "-measure", "rate", "-n", "3", "-duration", "100ms",
		"-deliveries", "300", "-json", "-label", "hub pubsub-test", h.url}, &out, &errOut)
	if code != ExitOK {
		t.Fatalf("exit status %d\n%s", code, &errOut)
	}
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Measure != MeasureRate || rep.PubSub == nil || len(rep.PubSub.Steps) != 1 || rep.Messages == 0 {
		t.Errorf("report %+v", rep)
	}
	if !strings.Contains(errOut.String(), "deliveries/s") {
		t.Errorf("summary: %s", &errOut)
	}
}

func TestPubSubParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"pubsub", "ws://h:1/connection/websocket"}, ""},
		{[]string{"pubsub", "-measure", "idle", "-n", "10", "ws://h:1/c"}, ""},
		{[]string{"pubsub", "-measure", "fast", "ws://h:1/c"}, "unknown -measure"},
		{[]string{"pubsub", "-publish", "carrier-pigeon", "ws://h:1/c"}, "unknown -publish"},
		{[]string{"pubsub", "-size", "20", "ws://h:1/c"}, "too small"},
		{[]string{"pubsub", "-count", "5", "ws://h:1/c"}, "-count only"},
		{[]string{"pubsub", "-channel", `a"b`, "ws://h:1/c"}, "bad -channel"},
		{[]string{"pubsub", "-publish", "api", "-api-url", "ftp://x/", "ws://h:1/c"}, "bad -api-url"},
		{[]string{"echo", "-measure", "max", "ws://h:1/c"}, "only works with pubsub"},
	} {
		_, _, err := parseArgs(tc.args, io.Discard)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
	cfg := Config{Mode: ModePubSub, URL: "wss://example.com:8443/connection/websocket"}
	cfg.Defaults()
	if cfg.Measure != MeasureMax || cfg.APIURL != "https://example.com:8443/api/publish" || cfg.Deliveries != 10000 || cfg.Duration != 5*time.Second {
		t.Errorf("defaults %+v", cfg)
	}
}

func TestLineReader(t *testing.T) {
	frame := strings.Join([]string{
		`{"push":{"channel":"bench","pub":{"data":"wb0000000100000000000000ffabcd"}}}`,
		`{"push":{"channel":"bench","pub":{"data":"wb0000000200000000000000ffabcd","offset":7}}}`,
		`{"push":{"channel":"bench","pub":{"data":"wb0000000300000000000000ffabcd","info":{"user":"","client":"c"}}}}`,
		`{"push":{"channel":"bench","pub":{"data":{"text":"not ours"}}}}`,
		`{}`,
		`{"id":1,"connect":{"client":"x","ping":25,"pong":true}}`,
		`{"id":3,"error":{"code":103,"message":"permission denied"}}`,
		`{"push":{"channel":"other","join":{"info":{"client":"y"}}}}`,
		``,
	}, "\n")
	var lr lineReader
	var l serverLine
	lr.reset([]byte(frame))
	var got []string
	for {
		err := lr.next(&l)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		s := fmt.Sprintf("%d", l.kind)
		switch l.kind {
		case replyPublication:
			seq, _, ok := unstampPub(l.data)
			s += fmt.Sprintf(" %s %d %v", l.channel, seq, ok)
		case replyResult:
			s += fmt.Sprintf(" id=%d pong=%v err=%v", l.id, l.pong, l.err != nil)
		}
		got = append(got, s)
	}
	want := []string{"1 bench 1 true", "1 bench 2 true", "1 bench 3 true", "1 bench 0 false", "2", "3 id=1 pong=true err=false", "3 id=3 pong=false err=true", "0"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q\nwant %q", got, want)
	}
	// The publications with our data take the fast path, whatever follows
	// the data; anything else is decoded.
	for i, line := range strings.Split(frame, "\n")[:4] {
		if fast := fastPush([]byte(line), &l); fast != (i < 3) {
			t.Errorf("line %d: fast path %v", i, fast)
		}
	}
	for _, line := range []string{
		`{"push":{"channel":"bench","pub":{"data":"a\"b"}}}`,
		`{"push":{"channel":"be\"nch","pub":{"data":"ab"}}}`,
		`{"push":{"channel":"bench","pub":{"data":"ab"x}}}`,
	} {
		if fastPush([]byte(line), &l) {
			t.Errorf("fast path taken for %s", line)
		}
	}
	lr.reset([]byte(`{"push":` + "\n"))
	if err := lr.next(&l); !errors.Is(err, errMalformed) {
		t.Errorf("truncated line: %v", err)
	}
}

func TestStampPub(t *testing.T) {
	p := newPubData(64)
	stampPub(p, 0xBEEF, 987654321)
	if !json.Valid(p) {
		t.Fatalf("publication data %q is not JSON", p)
	}
	seq, ts, ok := unstampPub(p)
	if !ok || seq != 0xBEEF || ts != 987654321 {
		t.Errorf("got %x %d %v", seq, ts, ok)
	}
	if _, _, ok := unstampPub([]byte(`{"a":1}`)); ok {
		t.Error("foreign data taken for ours")
	}
}
