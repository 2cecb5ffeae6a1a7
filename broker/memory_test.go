package broker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is a settable clock for TTL tests.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) add(d time.Duration) { c.ns.Add(int64(d)) }
func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func withClock(m *Memory, c *fakeClock) *Memory { m.now = c.now; return m }

// recorder is an EventHandler that keeps what it got.
type recorder struct {
	mu     sync.Mutex
	pubs   map[string][]uint64
	events []string
	gaps   int
	onPub  func(ch string, pub *Publication)
}

func newRecorder() *recorder { return &recorder{pubs: map[string][]uint64{}} }

func (r *recorder) HandlePublication(ch string, pub *Publication, sp StreamPosition) {
	if r.onPub != nil {
		r.onPub(ch, pub)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pubs[ch] = append(r.pubs[ch], pub.Offset)
	r.events = append(r.events, fmt.Sprintf("pub %s %s %d %s", ch, pub.Data, sp.Offset, epochTag(sp)))
}
func (r *recorder) HandleJoin(ch string, info *ClientInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, "join "+ch+" "+info.ClientID)
}
func (r *recorder) HandleLeave(ch string, info *ClientInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, "leave "+ch+" "+info.ClientID)
}
func (r *recorder) HandleGap(channels []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gaps++
}
func (r *recorder) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

func epochTag(sp StreamPosition) string {
	if sp.Epoch == "" {
		return "noepoch"
	}
	return "epoch"
}

func runMemory(t *testing.T, cfg MemoryConfig, h EventHandler) *Memory {
	t.Helper()
	m := NewMemory(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	if err := m.Run(ctx, h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := m.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return m
}

var ctx = context.Background()

func histOpts(size int) PublishOptions {
	return PublishOptions{HistorySize: size, HistoryTTL: time.Minute}
}

func TestMemoryOffsetsAndEpoch(t *testing.T) {
	m := runMemory(t, MemoryConfig{}, newRecorder())
	var epoch string
	for i := uint64(1); i <= 5; i++ {
		sp, err := m.Publish(ctx, "ch", []byte(`{}`), histOpts(10))
		if err != nil {
			t.Fatal(err)
		}
		if sp.Offset != i {
			t.Fatalf("offset %d, want %d", sp.Offset, i)
		}
		if epoch == "" {
			epoch = sp.Epoch
		}
		if sp.Epoch == "" || sp.Epoch != epoch {
			t.Fatalf("epoch %q changed from %q", sp.Epoch, epoch)
		}
	}
	// Other channels have their own streams.
	sp, _ := m.Publish(ctx, "other", []byte(`{}`), histOpts(10))
	if sp.Offset != 1 || sp.Epoch == epoch {
		t.Fatalf("other channel: %+v", sp)
	}
	// Without history: no offset, no epoch, nothing stored.
	sp, _ = m.Publish(ctx, "nohist", []byte(`{}`), PublishOptions{})
	if sp != (StreamPosition{}) {
		t.Fatalf("no-history publish returned %+v", sp)
	}
	pubs, pos, _ := m.History(ctx, "nohist", HistoryOptions{Limit: -1})
	if len(pubs) != 0 || pos.Offset != 0 || pos.Epoch == "" {
		t.Fatalf("history of a channel without history: %d pubs, %+v", len(pubs), pos)
	}
	_, pos2, _ := m.History(ctx, "nohist", HistoryOptions{})
	if pos2.Epoch != pos.Epoch {
		t.Fatal("epoch of an empty stream is not stable")
	}
}

// BrokerStats counts what history holds: trimmed and removed publications
// are gone from it, publications without history never enter it.
func TestMemoryBrokerStats(t *testing.T) {
	m := runMemory(t, MemoryConfig{}, newRecorder())
	if st, err := m.BrokerStats(ctx); err != nil || st != (Stats{}) {
		t.Fatalf("empty broker: %+v, %v", st, err)
	}
	for range 5 {
		m.Publish(ctx, "a", []byte(`"0123456789"`), histOpts(3)) // 12 bytes, 3 kept
	}
	m.Publish(ctx, "b", []byte(`{}`), histOpts(10))
	m.Publish(ctx, "c", []byte(`{"not":"kept"}`), PublishOptions{})
	if st, _ := m.BrokerStats(ctx); st != (Stats{HistoryPublications: 4, HistoryBytes: 3*12 + 2}) {
		t.Fatalf("stats %+v, want 4 publications of 38 bytes", st)
	}
	if err := m.RemoveHistory(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if st, _ := m.BrokerStats(ctx); st != (Stats{HistoryPublications: 1, HistoryBytes: 2}) {
		t.Fatalf("stats after RemoveHistory: %+v", st)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.BrokerStats(canceled); err == nil {
		t.Fatal("BrokerStats ignored a canceled context")
	}
}

func TestMemoryHistorySizeAndSelection(t *testing.T) {
	m := runMemory(t, MemoryConfig{}, newRecorder())
	for i := 1; i <= 8; i++ {
		if _, err := m.Publish(ctx, "ch", []byte(fmt.Sprint(i)), histOpts(5)); err != nil {
			t.Fatal(err)
		}
	}
	offsets := func(pubs []*Publication) []uint64 {
		var o []uint64
		for _, p := range pubs {
			o = append(o, p.Offset)
		}
		return o
	}
	_, top, _ := m.History(ctx, "ch", HistoryOptions{})
	cases := []struct {
		name string
		opts HistoryOptions
		want []uint64
	}{
		{"all", HistoryOptions{Limit: -1}, []uint64{4, 5, 6, 7, 8}},
		{"none", HistoryOptions{Limit: 0}, nil},
		{"limit", HistoryOptions{Limit: 2}, []uint64{4, 5}},
		{"reverse", HistoryOptions{Limit: 2, Reverse: true}, []uint64{8, 7}},
		{"since", HistoryOptions{Limit: -1, Since: &StreamPosition{Offset: 6, Epoch: top.Epoch}}, []uint64{7, 8}},
		{"since top", HistoryOptions{Limit: -1, Since: &StreamPosition{Offset: 8, Epoch: top.Epoch}}, nil},
		{"since before first", HistoryOptions{Limit: -1, Since: &StreamPosition{Offset: 1, Epoch: top.Epoch}}, []uint64{4, 5, 6, 7, 8}},
		{"since limit", HistoryOptions{Limit: 1, Since: &StreamPosition{Offset: 4, Epoch: top.Epoch}}, []uint64{5}},
		{"since reverse", HistoryOptions{Limit: -1, Reverse: true, Since: &StreamPosition{Offset: 7, Epoch: top.Epoch}}, []uint64{6, 5, 4}},
		{"since reverse limit", HistoryOptions{Limit: 1, Reverse: true, Since: &StreamPosition{Offset: 7, Epoch: top.Epoch}}, []uint64{6}},
		{"since reverse past first", HistoryOptions{Limit: -1, Reverse: true, Since: &StreamPosition{Offset: 2, Epoch: top.Epoch}}, nil},
		{"other epoch", HistoryOptions{Limit: -1, Since: &StreamPosition{Offset: 7, Epoch: "x"}}, []uint64{4, 5, 6, 7, 8}},
	}
	for _, tc := range cases {
		pubs, pos, err := m.History(ctx, "ch", tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		if got := offsets(pubs); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
		if pos != top || pos.Offset != 8 {
			t.Errorf("%s: position %+v, want %+v", tc.name, pos, top)
		}
	}
	pubs, _, _ := m.History(ctx, "ch", HistoryOptions{Limit: 1, Reverse: true})
	if string(pubs[0].Data) != "8" || pubs[0].Time == 0 {
		t.Errorf("newest publication %+v", pubs[0])
	}
}

func TestMemoryHistoryTTL(t *testing.T) {
	clk := newFakeClock()
	m := withClock(NewMemory(MemoryConfig{HistoryMetaTTL: time.Hour}), clk)
	opts := PublishOptions{HistorySize: 10, HistoryTTL: 10 * time.Second}
	first, _ := m.Publish(ctx, "ch", []byte(`1`), opts)
	clk.add(6 * time.Second)
	m.Publish(ctx, "ch", []byte(`2`), opts)
	clk.add(6 * time.Second) // the first is 12s old, the second 6s
	pubs, pos, _ := m.History(ctx, "ch", HistoryOptions{Limit: -1})
	if len(pubs) != 1 || pubs[0].Offset != 2 || pos.Offset != 2 || pos.Epoch != first.Epoch {
		t.Fatalf("after one publication expired: %d pubs, %+v", len(pubs), pos)
	}
	clk.add(10 * time.Second)
	pubs, pos, _ = m.History(ctx, "ch", HistoryOptions{Limit: -1})
	if len(pubs) != 0 || pos.Offset != 2 || pos.Epoch != first.Epoch {
		t.Fatalf("after all expired the position must stay: %d pubs, %+v", len(pubs), pos)
	}
	// The sweeper frees the publications too.
	m.shard("ch").sweep(clk.now().UnixNano())
	if st := m.shard("ch").streams["ch"]; st == nil || len(st.pubs) != 0 {
		t.Fatalf("sweep: %+v", st)
	}
}

func TestMemoryMetaTTLNewEpoch(t *testing.T) {
	clk := newFakeClock()
	m := withClock(NewMemory(MemoryConfig{HistoryMetaTTL: time.Minute}), clk)
	opts := PublishOptions{HistorySize: 10, HistoryTTL: 10 * time.Second}
	sp1, _ := m.Publish(ctx, "ch", []byte(`1`), opts)
	clk.add(30 * time.Second)
	// A read with a meta TTL extends the stream's life.
	m.History(ctx, "ch", HistoryOptions{MetaTTL: time.Minute})
	clk.add(45 * time.Second)
	_, pos, _ := m.History(ctx, "ch", HistoryOptions{MetaTTL: time.Minute})
	if pos != sp1 {
		t.Fatalf("stream lost before its meta TTL: %+v, want %+v", pos, sp1)
	}
	clk.add(2 * time.Minute)
	sp2, _ := m.Publish(ctx, "ch", []byte(`2`), opts)
	if sp2.Offset != 1 || sp2.Epoch == sp1.Epoch {
		t.Fatalf("after the meta TTL the stream must restart under a new epoch: %+v (old %+v)", sp2, sp1)
	}
	// Explicit per-publication meta TTL.
	sp3, _ := m.Publish(ctx, "short", []byte(`1`), PublishOptions{HistorySize: 1, HistoryTTL: time.Second, HistoryMetaTTL: 5 * time.Second})
	clk.add(6 * time.Second)
	m.shard("short").sweep(clk.now().UnixNano())
	_, pos, _ = m.History(ctx, "short", HistoryOptions{})
	if pos.Epoch == sp3.Epoch || pos.Offset != 0 {
		t.Fatalf("short meta TTL: %+v vs %+v", pos, sp3)
	}
}

func TestMemoryRemoveHistoryKeepsPosition(t *testing.T) {
	m := runMemory(t, MemoryConfig{}, newRecorder())
	m.Publish(ctx, "ch", []byte(`1`), histOpts(10))
	sp, _ := m.Publish(ctx, "ch", []byte(`2`), histOpts(10))
	if err := m.RemoveHistory(ctx, "ch"); err != nil {
		t.Fatal(err)
	}
	pubs, pos, _ := m.History(ctx, "ch", HistoryOptions{Limit: -1})
	if len(pubs) != 0 || pos != sp {
		t.Fatalf("after remove: %d pubs at %+v, want none at %+v", len(pubs), pos, sp)
	}
	sp3, _ := m.Publish(ctx, "ch", []byte(`3`), histOpts(10))
	if sp3.Offset != 3 || sp3.Epoch != sp.Epoch {
		t.Fatalf("offsets must continue after remove: %+v", sp3)
	}
	if err := m.RemoveHistory(ctx, "never"); err != nil {
		t.Fatal(err)
	}
}

func TestMemoryIdempotency(t *testing.T) {
	clk := newFakeClock()
	rec := newRecorder()
	m := withClock(NewMemory(MemoryConfig{}), clk)
	if err := m.Run(ctx, rec); err != nil {
		t.Fatal(err)
	}
	defer m.Close(ctx)
	m.Subscribe(ctx, "ch")
	opts := histOpts(10)
	opts.IdempotencyKey = "k1"
	opts.IdempotentResultTTL = time.Minute
	opts.HistoryTTL = time.Hour
	sp1, _ := m.Publish(ctx, "ch", []byte(`a`), opts)
	sp2, _ := m.Publish(ctx, "ch", []byte(`b`), opts)
	if sp1 != sp2 {
		t.Fatalf("repeated key returned %+v, want %+v", sp2, sp1)
	}
	if n := len(rec.snapshot()); n != 1 {
		t.Fatalf("repeated key delivered again: %d deliveries", n)
	}
	// Same key on another channel is another publication.
	sp3, _ := m.Publish(ctx, "other", []byte(`c`), opts)
	if sp3.Offset != 1 || sp3.Epoch == sp1.Epoch {
		t.Fatalf("other channel: %+v", sp3)
	}
	clk.add(2 * time.Minute)
	sp4, _ := m.Publish(ctx, "ch", []byte(`d`), opts)
	if sp4.Offset != 2 {
		t.Fatalf("after the key expired: %+v", sp4)
	}
	pubs, _, _ := m.History(ctx, "ch", HistoryOptions{Limit: -1})
	if len(pubs) != 2 || string(pubs[0].Data) != "a" || string(pubs[1].Data) != "d" {
		t.Fatalf("history %v", pubs)
	}
	m.shard("ch").sweep(clk.now().Add(10 * time.Minute).UnixNano())
	if len(m.shard("ch").idem) != 0 {
		t.Fatal("sweep kept an expired idempotency key")
	}
}

func TestMemoryDeliversOnlySubscribed(t *testing.T) {
	rec := newRecorder()
	m := runMemory(t, MemoryConfig{}, rec)
	m.Publish(ctx, "ch", []byte(`0`), PublishOptions{})
	m.Subscribe(ctx, "ch")
	m.Subscribe(ctx, "ch") // twice is once
	m.Publish(ctx, "ch", []byte(`1`), PublishOptions{})
	m.Publish(ctx, "ch", []byte(`2`), histOpts(3))
	m.PublishJoin(ctx, "ch", &ClientInfo{ClientID: "c1"})
	m.PublishLeave(ctx, "ch", &ClientInfo{ClientID: "c1"})
	m.PublishJoin(ctx, "unsubscribed", &ClientInfo{ClientID: "c2"})
	m.Unsubscribe(ctx, "ch")
	m.Publish(ctx, "ch", []byte(`3`), PublishOptions{})
	got := fmt.Sprint(rec.snapshot())
	want := "[pub ch 1 0 noepoch pub ch 2 1 epoch join ch c1 leave ch c1]"
	if got != want {
		t.Fatalf("events %s, want %s", got, want)
	}
}

// Deliveries of one channel arrive in offset order even with many
// concurrent publishers, and never concurrently.
func TestMemoryOrderedConcurrentDelivery(t *testing.T) {
	rec := newRecorder()
	var inFlight, maxInFlight atomic.Int32
	rec.onPub = func(ch string, pub *Publication) {
		if ch != "a" {
			return
		}
		n := inFlight.Add(1)
		if n > maxInFlight.Load() {
			maxInFlight.Store(n)
		}
		time.Sleep(10 * time.Microsecond)
		inFlight.Add(-1)
	}
	m := runMemory(t, MemoryConfig{}, rec)
	for _, ch := range []string{"a", "b"} {
		m.Subscribe(ctx, ch)
	}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				ch := "a"
				if i%2 == 1 {
					ch = "b"
				}
				if _, err := m.Publish(ctx, ch, []byte(`{}`), histOpts(1000)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, ch := range []string{"a", "b"} {
		offs := rec.pubs[ch]
		if len(offs) != 800 {
			t.Fatalf("%s: %d deliveries, want 800", ch, len(offs))
		}
		for i, o := range offs {
			if o != uint64(i+1) {
				t.Fatalf("%s: delivery %d has offset %d", ch, i, o)
			}
		}
	}
	if maxInFlight.Load() != 1 {
		t.Fatalf("deliveries of one channel overlapped (%d at once)", maxInFlight.Load())
	}
}

// The handler may call the broker back while a publisher of the same
// shard waits for its turn.
func TestMemoryHandlerReentry(t *testing.T) {
	rec := newRecorder()
	var m *Memory
	rec.onPub = func(ch string, _ *Publication) {
		if ch == "a" {
			if _, _, err := m.History(ctx, "a", HistoryOptions{Limit: 1}); err != nil {
				t.Error(err)
			}
			m.AddPresence(ctx, "a", &ClientInfo{ClientID: "x"})
			m.Publish(ctx, "b", []byte(`{}`), PublishOptions{})
		}
	}
	m = runMemory(t, MemoryConfig{}, rec)
	m.Subscribe(ctx, "a")
	m.Subscribe(ctx, "b")
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				m.Publish(ctx, "a", []byte(`{}`), histOpts(10))
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("deadlock")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.pubs["a"]) != 200 || len(rec.pubs["b"]) != 200 {
		t.Fatalf("deliveries a=%d b=%d", len(rec.pubs["a"]), len(rec.pubs["b"]))
	}
}

func TestMemoryPresence(t *testing.T) {
	clk := newFakeClock()
	m := withClock(NewMemory(MemoryConfig{PresenceTTL: 10 * time.Second}), clk)
	add := func(client, user string) {
		if err := m.AddPresence(ctx, "ch", &ClientInfo{ClientID: client, UserID: user}); err != nil {
			t.Fatal(err)
		}
	}
	add("c1", "u1")
	add("c2", "u1")
	add("c3", "")
	add("c4", "")
	stats, _ := m.PresenceStats(ctx, "ch")
	if stats != (PresenceStats{NumClients: 4, NumUsers: 2}) {
		t.Fatalf("stats %+v", stats)
	}
	p, _ := m.Presence(ctx, "ch")
	if len(p) != 4 || p["c2"].UserID != "u1" {
		t.Fatalf("presence %v", p)
	}
	clk.add(6 * time.Second)
	add("c1", "u1") // refreshed
	clk.add(6 * time.Second)
	stats, _ = m.PresenceStats(ctx, "ch")
	if stats != (PresenceStats{NumClients: 1, NumUsers: 1}) {
		t.Fatalf("after expiry %+v", stats)
	}
	m.RemovePresence(ctx, "ch", "c1", "u1")
	p, _ = m.Presence(ctx, "ch")
	if len(p) != 0 {
		t.Fatalf("after remove %v", p)
	}
	m.RemovePresence(ctx, "none", "c1", "u1")
	add("c9", "u9")
	m.shard("ch").sweep(clk.now().Add(time.Minute).UnixNano())
	if len(m.shard("ch").presence) != 0 {
		t.Fatal("sweep kept expired presence")
	}
}

func TestMemoryLifecycle(t *testing.T) {
	rec := newRecorder()
	m := NewMemory(MemoryConfig{SweepInterval: time.Millisecond})
	if err := m.Run(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(ctx, rec); err == nil {
		t.Fatal("second Run succeeded")
	}
	m.Subscribe(ctx, "ch")
	time.Sleep(5 * time.Millisecond) // let the sweeper tick
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Stored, not delivered, after Close.
	sp, err := m.Publish(ctx, "ch", []byte(`{}`), histOpts(5))
	if err != nil || sp.Offset != 1 {
		t.Fatalf("publish after close: %+v %v", sp, err)
	}
	if n := len(rec.snapshot()); n != 0 {
		t.Fatalf("delivered %d after Close", n)
	}
	if err := m.Run(ctx, rec); err == nil {
		t.Fatal("Run after Close succeeded")
	}
	// A cancelled Run context stops deliveries too.
	m2 := NewMemory(MemoryConfig{SweepInterval: time.Millisecond})
	rctx, cancel := context.WithCancel(ctx)
	m2.Run(rctx, rec)
	m2.Subscribe(ctx, "ch")
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for m2.deliverer() != nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	m2.Publish(ctx, "ch", []byte(`{}`), PublishOptions{})
	if n := len(rec.snapshot()); n != 0 {
		t.Fatalf("delivered %d after the Run context ended", n)
	}
	m2.Close(ctx)
	// Cancelled contexts are refused.
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if _, err := m2.Publish(cctx, "ch", nil, PublishOptions{}); err == nil {
		t.Fatal("publish with a cancelled context succeeded")
	}
}

// A channel unsubscribed and subscribed again while a delivery is in
// flight keeps its order.
func TestMemoryResubscribeKeepsOrder(t *testing.T) {
	rec := newRecorder()
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	rec.onPub = func(ch string, pub *Publication) {
		if pub.Offset == 1 {
			entered <- struct{}{}
			<-release
		}
	}
	m := runMemory(t, MemoryConfig{}, rec)
	m.Subscribe(ctx, "ch")
	done := make(chan struct{})
	go func() {
		m.Publish(ctx, "ch", []byte(`1`), histOpts(10))
		close(done)
	}()
	<-entered
	m.Unsubscribe(ctx, "ch")
	m.Subscribe(ctx, "ch")
	second := make(chan struct{})
	go func() {
		m.Publish(ctx, "ch", []byte(`2`), histOpts(10))
		close(second)
	}()
	select {
	case <-second:
		t.Fatal("the second publication was delivered before the first")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	<-done
	<-second
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if fmt.Sprint(rec.pubs["ch"]) != "[1 2]" {
		t.Fatalf("order %v", rec.pubs["ch"])
	}
	m.Unsubscribe(ctx, "ch")
	if len(m.shard("ch").subs) != 0 {
		t.Fatal("an idle unsubscribed channel was kept")
	}
}
