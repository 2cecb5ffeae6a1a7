package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/broker/brokertest"
)

const waitLong = 20 * time.Second

func histOpts(size int) broker.PublishOptions {
	return broker.PublishOptions{HistorySize: size, HistoryTTL: time.Hour}
}

// publishRange publishes "m<i>" for i in [from, to] with history,
// retrying while the broker is unavailable (a reconnection, a leader
// election), and fails unless the offsets are i.
func publishRange(t *testing.T, b *Broker, ch string, from, to int, opts broker.PublishOptions) string {
	t.Helper()
	var epoch string
	for i := from; i <= to; i++ {
		deadline := time.Now().Add(waitLong)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			sp, err := b.Publish(ctx, ch, []byte(fmt.Sprintf("m%d", i)), opts)
			cancel()
			if err == nil {
				if opts.HistorySize > 0 && sp.Offset != uint64(i) {
					t.Fatalf("publication m%d at offset %d", i, sp.Offset)
				}
				epoch = sp.Epoch
				break
			}
			if !errors.Is(err, broker.ErrUnavailable) || time.Now().After(deadline) {
				t.Fatalf("publishing m%d: %v", i, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return epoch
}

// expectStream waits until rec has n publications on ch and checks they
// are m1..mn at offsets 1..n, in order, once each.
func expectStream(t *testing.T, rec *brokertest.Recorder, ch string, n int) {
	t.Helper()
	rec.Wait(t, waitLong, fmt.Sprintf("%d publications on %q", n, ch), func() bool {
		return len(rec.Publications(ch)) >= n
	})
	evs := rec.Publications(ch)
	if len(evs) != n {
		t.Fatalf("%d publications delivered, want %d", len(evs), n)
	}
	for i, ev := range evs {
		if ev.Pub.Offset != uint64(i+1) || string(ev.Pub.Data) != fmt.Sprintf("m%d", i+1) || ev.Pos.Offset != ev.Pub.Offset {
			t.Fatalf("delivery %d is %q at offset %d (position %+v)", i, ev.Pub.Data, ev.Pub.Offset, ev.Pos)
		}
	}
}

func waitHealthy(t *testing.T, b *Broker, healthy bool) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for (b.Healthy() == nil) != healthy {
		if time.Now().After(deadline) {
			t.Fatalf("Healthy() = %v after %v, want healthy=%v", b.Healthy(), waitLong, healthy)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func subscribe(t *testing.T, b *Broker, ch string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
}

// loseOffsets returns a lose hook that drops, once each, the history
// publications of ch's fan-out subject at the given offsets.
func loseOffsets(ch string, offsets ...uint64) func(*nats.Msg) bool {
	tok, _ := subjectToken(ch)
	var mu sync.Mutex
	pending := map[uint64]bool{}
	for _, o := range offsets {
		pending[o] = true
	}
	return func(m *nats.Msg) bool {
		if m.Sub.Subject != "wsgate.c."+tok || m.Header.Get(hdrKind) != kindPub {
			return false
		}
		off, _ := strconv.ParseUint(m.Header.Get(hdrOffset), 10, 64)
		mu.Lock()
		defer mu.Unlock()
		if pending[off] {
			delete(pending, off)
			return true
		}
		return false
	}
}

// A publication lost on the way is read from history as soon as the next
// one shows the jump, and delivered in order.
func TestLostPublicationRepaired(t *testing.T) {
	ts := startTestServer(t, EmbeddedOptions{})
	pub := newTestBroker(t, Options{URLs: ts.url})
	runTestBroker(t, pub, brokertest.NewRecorder(t))
	sub := newTestBroker(t, Options{URLs: ts.url, PositionCheckInterval: -1})
	sub.lose = loseOffsets("room", 2, 3)
	rec := brokertest.NewRecorder(t)
	runTestBroker(t, sub, rec)
	subscribe(t, sub, "room")

	publishRange(t, pub, "room", 1, 5, histOpts(10))
	expectStream(t, rec, "room", 5)
	if rec.GapReported("room") {
		t.Fatal("a repaired loss was reported as a gap")
	}
}

// What history no longer holds is reported with HandleGap, and delivery
// goes on in order.
func TestUnrecoverableLossReported(t *testing.T) {
	ts := startTestServer(t, EmbeddedOptions{})
	pub := newTestBroker(t, Options{URLs: ts.url})
	runTestBroker(t, pub, brokertest.NewRecorder(t))
	sub := newTestBroker(t, Options{URLs: ts.url, PositionCheckInterval: -1})
	sub.lose = loseOffsets("room", 2, 3, 4)
	rec := brokertest.NewRecorder(t)
	runTestBroker(t, sub, rec)
	subscribe(t, sub, "room")

	publishRange(t, pub, "room", 1, 5, histOpts(2)) // history keeps 4 and 5
	rec.Wait(t, waitLong, "offset 5", func() bool {
		evs := rec.Publications("room")
		return len(evs) > 0 && evs[len(evs)-1].Pub.Offset == 5
	})
	var got []uint64
	for _, ev := range rec.Publications("room") {
		got = append(got, ev.Pub.Offset)
	}
	if !slices.Equal(got, []uint64{1, 4, 5}) {
		t.Fatalf("delivered offsets %v, want [1 4 5]", got)
	}
	if !rec.GapReported("room") {
		t.Fatal("the loss of offsets 2 and 3 was not reported")
	}
}

// A gap larger than MaxRepair is reported rather than read back.
func TestLargeGapReported(t *testing.T) {
	ts := startTestServer(t, EmbeddedOptions{})
	pub := newTestBroker(t, Options{URLs: ts.url})
	runTestBroker(t, pub, brokertest.NewRecorder(t))
	sub := newTestBroker(t, Options{URLs: ts.url, PositionCheckInterval: -1, MaxRepair: 2})
	sub.lose = loseOffsets("room", 2, 3, 4)
	rec := brokertest.NewRecorder(t)
	runTestBroker(t, sub, rec)
	subscribe(t, sub, "room")

	publishRange(t, pub, "room", 1, 5, histOpts(10))
	rec.Wait(t, waitLong, "offset 5", func() bool { return len(rec.Publications("room")) == 2 })
	if !rec.GapReported("room") {
		t.Fatal("a gap of 3 with MaxRepair 2 was not reported")
	}
}

// The last publication lost, with nothing after it, is found by the
// position check of a quiet channel.
func TestLostLastPublicationFound(t *testing.T) {
	ts := startTestServer(t, EmbeddedOptions{})
	pub := newTestBroker(t, Options{URLs: ts.url})
	runTestBroker(t, pub, brokertest.NewRecorder(t))
	sub := newTestBroker(t, Options{URLs: ts.url, PositionCheckInterval: 100 * time.Millisecond})
	sub.lose = loseOffsets("room", 3)
	rec := brokertest.NewRecorder(t)
	runTestBroker(t, sub, rec)
	subscribe(t, sub, "room")

	publishRange(t, pub, "room", 1, 3, histOpts(10))
	expectStream(t, rec, "room", 3)
}

// The first publication after Subscribe lost, with nothing after it (a
// subscription not yet known to the server that routed it), is found by
// the position check that follows Subscribe.
func TestLostFirstPublicationFound(t *testing.T) {
	ts := startTestServer(t, EmbeddedOptions{})
	pub := newTestBroker(t, Options{URLs: ts.url})
	runTestBroker(t, pub, brokertest.NewRecorder(t))
	sub := newTestBroker(t, Options{URLs: ts.url, PositionCheckInterval: 100 * time.Millisecond})
	sub.lose = loseOffsets("room", 1)
	rec := brokertest.NewRecorder(t)
	runTestBroker(t, sub, rec)
	subscribe(t, sub, "room")

	publishRange(t, pub, "room", 1, 1, histOpts(10))
	expectStream(t, rec, "room", 1)
}

// A node cut off from NATS reconnects by itself, reads back what it missed
// on channels with history, and reports the channels without history,
// whose losses it cannot know. Healthy follows the connection.
func TestPartitionedNodeRecovers(t *testing.T) {
	ts := startTestServer(t, EmbeddedOptions{})
	proxy := startCutProxy(t, ts.url[len("nats://"):])
	pub := newTestBroker(t, Options{URLs: ts.url})
	runTestBroker(t, pub, brokertest.NewRecorder(t))
	sub := newTestBroker(t, Options{URLs: proxy.URL(), PositionCheckInterval: -1})
	rec := brokertest.NewRecorder(t)
	runTestBroker(t, sub, rec)
	subscribe(t, sub, "room")
	subscribe(t, sub, "chat")

	publishRange(t, pub, "room", 1, 3, histOpts(100))
	expectStream(t, rec, "room", 3)

	proxy.Cut()
	waitHealthy(t, sub, false)
	if err := sub.Healthy(); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("Healthy while cut off: %v, want ErrUnavailable", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err := sub.Publish(ctx, "room", []byte("x"), histOpts(100))
	cancel()
	if !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("Publish while cut off: %v, want ErrUnavailable", err)
	}
	if err := sub.Subscribe(context.Background(), "elsewhere"); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("Subscribe while cut off: %v, want ErrUnavailable", err)
	}
	publishRange(t, pub, "room", 4, 8, histOpts(100))

	proxy.Restore()
	waitHealthy(t, sub, true)
	expectStream(t, rec, "room", 8)
	rec.Wait(t, waitLong, "a gap report for the channel without history", func() bool { return rec.GapReported("chat") })
	if rec.GapReported("room") {
		t.Fatal("the repaired channel was reported as a gap")
	}
}

// A NATS server restart: nodes keep running, reconnect, and history
// acknowledged before the restart is still there after it.
func TestServerRestart(t *testing.T) {
	ts := startTestServer(t, EmbeddedOptions{})
	pub := newTestBroker(t, Options{URLs: ts.url})
	runTestBroker(t, pub, brokertest.NewRecorder(t))
	sub := newTestBroker(t, Options{URLs: ts.url, PositionCheckInterval: -1})
	rec := brokertest.NewRecorder(t)
	runTestBroker(t, sub, rec)
	subscribe(t, sub, "room")

	epoch := publishRange(t, pub, "room", 1, 10, histOpts(100))
	expectStream(t, rec, "room", 10)
	if st := brokerStats(t, pub); st.Reconnects != 0 || st.HistoryPublications != 10 || st.HistoryBytes == 0 {
		t.Fatalf("stats before the restart: %+v, want 10 publications and no reconnect", st)
	}

	ts.stop(t)
	waitHealthy(t, pub, false)
	ts.start(t)
	waitHealthy(t, pub, true)
	waitHealthy(t, sub, true)
	if st := brokerStats(t, pub); st.Reconnects != 1 || st.HistoryPublications != 10 {
		t.Fatalf("stats after the restart: %+v, want 10 publications and one reconnect", st)
	}

	if again := publishRange(t, pub, "room", 11, 20, histOpts(100)); again != epoch {
		t.Fatalf("epoch %q after the restart, %q before: the stream was lost", again, epoch)
	}
	expectStream(t, rec, "room", 20)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pubs, sp, err := sub.History(ctx, "room", broker.HistoryOptions{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(pubs) != 20 || sp != (broker.StreamPosition{Offset: 20, Epoch: epoch}) {
		t.Fatalf("history after the restart: %d publications at %+v", len(pubs), sp)
	}
}

// In a cluster of three with streams replicated three times, the loss of
// the history stream's leader loses no acknowledged publication, delivery
// resumes, and the presence of a node that died expires.
func TestClusterLeaderLoss(t *testing.T) {
	t.Parallel()
	servers := startTestCluster(t, 3)
	urls := servers[0].url + "," + servers[1].url + "," + servers[2].url
	pub := newTestBroker(t, Options{URLs: urls, Replicas: 3})
	runTestBroker(t, pub, brokertest.NewRecorder(t))
	sub := newTestBroker(t, Options{URLs: urls, Replicas: 3, PositionCheckInterval: 200 * time.Millisecond})
	rec := brokertest.NewRecorder(t)
	runTestBroker(t, sub, rec)
	subscribe(t, sub, "room")

	epoch := publishRange(t, pub, "room", 1, 20, histOpts(100))
	expectStream(t, rec, "room", 20)

	var leader *testServer
	for _, ts := range servers {
		if ts.e.srv.JetStreamIsStreamLeader("$G", pub.historyStream) {
			leader = ts
		}
	}
	if leader == nil {
		t.Fatal("no leader for the history stream")
	}
	leader.stop(t)

	if again := publishRange(t, pub, "room", 21, 40, histOpts(100)); again != epoch {
		t.Fatalf("epoch %q after the leader loss, %q before", again, epoch)
	}
	expectStream(t, rec, "room", 40)

	// A node dies without removing its presence: the entry expires.
	dying := newTestBroker(t, Options{URLs: urls, Replicas: 3})
	runTestBroker(t, dying, brokertest.NewRecorder(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		err := dying.AddPresence(ctx, "room", &broker.ClientInfo{ClientID: "c1", UserID: "u1"})
		if err == nil {
			break
		}
		if !errors.Is(err, broker.ErrUnavailable) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	dying.nc.Close() // a crash: no Close, no RemovePresence
	seen, gone := false, false
	for deadline := time.Now().Add(dying.opts.PresenceTTL + waitLong); !gone && time.Now().Before(deadline); {
		p, err := sub.Presence(ctx, "room")
		if err == nil {
			_, present := p["c1"]
			seen = seen || present
			gone = seen && !present
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !gone {
		t.Fatalf("the dead node's presence entry: seen %v, expired %v", seen, gone)
	}

	pubs, sp, err := sub.History(ctx, "room", broker.HistoryOptions{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(pubs) != 40 || sp != (broker.StreamPosition{Offset: 40, Epoch: epoch}) {
		t.Fatalf("history after the leader loss: %d publications at %+v", len(pubs), sp)
	}
}

// A slow EventHandler makes NATS drop messages for the node: channels with
// history are read back, the others are reported.
func TestSlowConsumerRepaired(t *testing.T) {
	ts := startTestServer(t, EmbeddedOptions{})
	pub := newTestBroker(t, Options{URLs: ts.url})
	runTestBroker(t, pub, brokertest.NewRecorder(t))
	sub := newTestBroker(t, Options{URLs: ts.url, PositionCheckInterval: -1, DeliveryShards: 1, ShardQueueSize: 1})
	rec := &blockingRecorder{Recorder: brokertest.NewRecorder(t), blocked: make(chan struct{}), release: make(chan struct{})}
	runTestBroker(t, sub, rec)
	subscribe(t, sub, "room")
	subscribe(t, sub, "chat")

	publishRange(t, pub, "room", 1, 1, histOpts(100))
	select {
	case <-rec.blocked:
	case <-time.After(waitLong):
		t.Fatal("the first publication was not delivered")
	}
	// The handler is stuck in the first delivery: the queue overflows.
	publishRange(t, pub, "room", 2, 30, histOpts(100))
	for i := range 30 {
		publishNoHistory(t, pub, "chat", fmt.Sprintf("c%d", i))
	}
	flush(t, pub)
	close(rec.release)

	expectStream(t, rec.Recorder, "room", 30)
	rec.Wait(t, waitLong, "a gap report for the channel without history", func() bool { return rec.GapReported("chat") })
}

func publishNoHistory(t *testing.T, b *Broker, ch, data string) {
	t.Helper()
	if _, err := b.Publish(context.Background(), ch, []byte(data), broker.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
}

func flush(t *testing.T, b *Broker) {
	t.Helper()
	if err := b.nc.FlushTimeout(5 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// blockingRecorder blocks its first publication until release is closed.
type blockingRecorder struct {
	*brokertest.Recorder
	blocked chan struct{} // closed when the first publication arrived
	release chan struct{}
	once    sync.Once
}

func (r *blockingRecorder) HandlePublication(ch string, pub *broker.Publication, sp broker.StreamPosition) {
	r.once.Do(func() {
		close(r.blocked)
		<-r.release
	})
	r.Recorder.HandlePublication(ch, pub, sp)
}

// A panic in the EventHandler is recovered; later deliveries go on.
func TestHandlerPanicRecovered(t *testing.T) {
	ts := startTestServer(t, EmbeddedOptions{})
	b := newTestBroker(t, Options{URLs: ts.url})
	rec := &panickingRecorder{Recorder: brokertest.NewRecorder(t)}
	runTestBroker(t, b, rec)
	subscribe(t, b, "room")
	publishRange(t, b, "room", 1, 2, histOpts(10))
	rec.Wait(t, waitLong, "the second publication", func() bool { return len(rec.Publications("room")) == 1 })
	if got := rec.Publications("room")[0].Pub.Offset; got != 2 {
		t.Fatalf("delivered offset %d after the panic, want 2", got)
	}
}

type panickingRecorder struct {
	*brokertest.Recorder
	once sync.Once
}

func (r *panickingRecorder) HandlePublication(ch string, pub *broker.Publication, sp broker.StreamPosition) {
	first := false
	r.once.Do(func() { first = true })
	if first {
		panic("handler bug")
	}
	r.Recorder.HandlePublication(ch, pub, sp)
}

// Run gives up after StartTimeout when NATS cannot be reached.
func TestRunUnavailable(t *testing.T) {
	b := newTestBroker(t, Options{URLs: fmt.Sprintf("nats://127.0.0.1:%d", freePort(t)), StartTimeout: 300 * time.Millisecond})
	err := b.Run(context.Background(), brokertest.NewRecorder(t))
	if !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("Run without NATS: %v, want ErrUnavailable", err)
	}
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(context.Background(), "room", []byte("x"), broker.PublishOptions{}); err == nil {
		t.Fatal("Publish after a failed Run succeeded")
	}
}

// Invalid options are refused by New with the field's name.
func TestOptionsValidation(t *testing.T) {
	for _, o := range []Options{
		{Prefix: "a.b"},
		{Prefix: "a b"},
		{Replicas: -1},
		{Replicas: 7},
		{PresenceTTL: 10 * time.Millisecond},
		{RequestTimeout: -time.Second},
		{TLSCertFile: "cert.pem"},
		{MaxRepair: -1},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted invalid options", o)
		}
	}
}

// brokerStats returns b's BrokerStats, failing the test on error.
func brokerStats(t *testing.T, b *Broker) broker.Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := b.BrokerStats(ctx)
	if err != nil {
		t.Fatalf("BrokerStats: %v", err)
	}
	return st
}
