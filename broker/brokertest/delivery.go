package brokertest

import (
	"bytes"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/wsgate/wsgate/broker"
)

// checkStream fails unless evs are the publications at offsets 1..n of
// epoch, each once and in order, with the data Publish put there.
func checkStream(t *testing.T, who string, evs []Event, epoch string, byOffset map[uint64]string) {
	t.Helper()
	n := len(byOffset)
	if len(evs) != n {
		t.Fatalf("%s: %d publications delivered, want %d (offsets %v)", who, len(evs), n, offsets(eventPubs(evs)))
	}
	for i, ev := range evs {
		want := uint64(i + 1)
		if ev.Pub.Offset != want || ev.Pos.Offset != want || ev.Pos.Epoch != epoch {
			t.Fatalf("%s: delivery %d is offset %d at %+v, want offset %d in epoch %q (offsets %v)",
				who, i, ev.Pub.Offset, ev.Pos, want, epoch, offsets(eventPubs(evs)))
		}
		if string(ev.Pub.Data) != byOffset[want] {
			t.Fatalf("%s: offset %d carries %q, Publish put %q there", who, want, ev.Pub.Data, byOffset[want])
		}
	}
}

// publishConcurrently publishes workers*each publications to ch with
// history from workers goroutines, worker w on node w, and returns the
// data by offset and the epoch.
func publishConcurrently(t *testing.T, e *env, ch string, workers, each int) (map[uint64]string, string) {
	t.Helper()
	var (
		mu       sync.Mutex
		byOffset = make(map[uint64]string)
		epoch    string
		wg       sync.WaitGroup
		errs     = make(chan error, workers)
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				data := fmt.Sprintf("w%d-%d", w, i)
				sp, err := e.node(w).Broker.Publish(e.ctx(t), ch, []byte(data), withHistory(workers*each))
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				byOffset[sp.Offset] = data
				epoch = sp.Epoch
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(byOffset) != workers*each {
		t.Fatalf("%d distinct offsets for %d publications", len(byOffset), workers*each)
	}
	return byOffset, epoch
}

// Publications of one channel reach the EventHandler once each, in offset
// order, never concurrently (the Recorder checks that).
func testOrderedDelivery(t *testing.T, e *env) {
	ch := e.channel("ordered")
	e.subscribeAll(t, ch)
	byOffset, epoch := publishConcurrently(t, e, ch, 4, 50)
	for n, node := range e.nodes {
		evs := node.Recorder.WaitPublications(t, e.grace, ch, len(byOffset))
		checkStream(t, fmt.Sprintf("node %d", n), evs, epoch, byOffset)
		if node.Recorder.GapReported(ch) {
			t.Errorf("node %d reported a gap on a healthy backend", n)
		}
	}
}

// After Unsubscribe nothing more is delivered; a new Subscribe delivers
// again.
func testUnsubscribe(t *testing.T, e *env) {
	ch, sentinel := e.channel("unsub"), e.channel("unsub-sentinel")
	rec := e.node(0).Recorder
	e.subscribe(t, 0, ch)
	e.subscribe(t, 0, sentinel)
	e.publish(t, 0, ch, "before", withHistory(10))
	rec.WaitPublications(t, e.grace, ch, 1)

	if err := e.node(0).Broker.Unsubscribe(e.ctx(t), ch); err != nil {
		t.Fatal(err)
	}
	e.publish(t, 0, ch, "after", withHistory(10))
	e.publish(t, 0, ch, "after-nohistory", broker.PublishOptions{})
	if err := e.node(0).Broker.PublishJoin(e.ctx(t), ch, &broker.ClientInfo{ClientID: "c"}); err != nil {
		t.Fatal(err)
	}
	e.publish(t, 0, sentinel, "sentinel", withHistory(10))
	rec.WaitPublications(t, e.grace, sentinel, 1)
	if evs := rec.Events(ch); len(evs) != 1 {
		t.Fatalf("%d events after Unsubscribe: %v", len(evs)-1, evs[1:])
	}

	e.subscribe(t, 0, ch)
	e.publish(t, 0, ch, "again", withHistory(10))
	evs := rec.WaitPublications(t, e.grace, ch, 2)
	if got := datas(eventPubs(evs)); !slices.Equal(got, []string{"before", "again"}) {
		t.Fatalf("delivered %q, want [before again]", got)
	}
}

// Joins and leaves reach every subscribed node with the client's info.
func testJoinLeave(t *testing.T, e *env) {
	ch := e.channel("joinleave")
	e.subscribeAll(t, ch)
	e.settle(t, ch, []int{0, len(e.nodes) - 1}, allNodes(e))
	info := &broker.ClientInfo{ClientID: "c1", UserID: "u1", ConnInfo: []byte(`{"a":1}`), ChanInfo: []byte(`{"b":2}`)}
	if err := e.node(0).Broker.PublishJoin(e.ctx(t), ch, info); err != nil {
		t.Fatal(err)
	}
	if err := e.node(len(e.nodes)-1).Broker.PublishLeave(e.ctx(t), ch, info); err != nil {
		t.Fatal(err)
	}
	for n, node := range e.nodes {
		node.Recorder.Wait(t, e.grace, "a join and a leave", func() bool { return len(e.events(n, ch)) >= 2 })
		var joins, leaves int
		for _, ev := range e.events(n, ch) {
			switch ev.Kind {
			case KindJoin:
				joins++
			case KindLeave:
				leaves++
			default:
				t.Fatalf("node %d: unexpected %v", n, ev.Kind)
			}
			if !sameInfo(ev.Info, info) {
				t.Fatalf("node %d: %v carries %+v, want %+v", n, ev.Kind, ev.Info, info)
			}
		}
		if joins != 1 || leaves != 1 {
			t.Fatalf("node %d: %d joins and %d leaves, want one each", n, joins, leaves)
		}
	}
}

func sameInfo(a, b *broker.ClientInfo) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.ClientID == b.ClientID && a.UserID == b.UserID &&
		bytes.Equal(a.ConnInfo, b.ConnInfo) && bytes.Equal(a.ChanInfo, b.ChanInfo)
}

// Channel names with characters that mean something to a message bus
// (separators, wildcards, escapes, spaces, non-ASCII) stay distinct.
func testChannelNames(t *testing.T, e *env) {
	names := []string{"a.b", "a%2Eb", "a_b", "a", "a.>", "a.*", "*", ">", "with space", "tab\tand\nnewline",
		"ünïcødé", "ns:room/1#x", "$SYS.x", "%", "..", "a..b", "_INBOX.x"}
	for _, name := range names {
		e.subscribe(t, 0, e.channel(name))
	}
	for _, name := range names {
		ch := e.channel(name)
		e.publish(t, 0, ch, "h:"+name, withHistory(5))
		e.publish(t, 0, ch, "p:"+name, broker.PublishOptions{})
	}
	rec := e.node(0).Recorder
	for _, name := range names {
		ch := e.channel(name)
		evs := rec.WaitPublications(t, e.grace, ch, 2)
		got := datas(eventPubs(evs))
		slices.Sort(got)
		if want := []string{"h:" + name, "p:" + name}; !slices.Equal(got, want) {
			t.Fatalf("channel %q received %q, want %q", name, got, want)
		}
		pubs, sp := e.history(t, 0, ch, broker.HistoryOptions{Limit: -1})
		if sp.Offset != 1 || !slices.Equal(datas(pubs), []string{"h:" + name}) {
			t.Fatalf("channel %q history %q at %+v", name, datas(pubs), sp)
		}
	}
}

// Close may be called twice.
func testCloseTwice(t *testing.T, e *env) {
	c, ok := e.node(0).Broker.(broker.Closer)
	if !ok {
		t.Skip("the broker does not implement broker.Closer")
	}
	for range 2 {
		_ = c.Close(e.ctx(t))
	}
}

// A publication on one node reaches every subscribed node once, in order,
// with the same offsets and epoch, and every node's history agrees.
func testCrossNodeFanOut(t *testing.T, e *env) {
	ch := e.channel("fanout")
	e.subscribeAll(t, ch)
	byOffset := make(map[uint64]string)
	var epoch string
	for i := range 20 {
		data := fmt.Sprintf("from-0-%d", i)
		sp := e.publish(t, 0, ch, data, withHistory(100))
		byOffset[sp.Offset] = data
		epoch = sp.Epoch
	}
	for i := range 10 {
		data := fmt.Sprintf("from-1-%d", i)
		sp := e.publish(t, 1, ch, data, withHistory(100))
		byOffset[sp.Offset] = data
		if sp.Epoch != epoch {
			t.Fatalf("node 1 published in epoch %q, node 0 in %q", sp.Epoch, epoch)
		}
	}
	for n, node := range e.nodes {
		evs := node.Recorder.WaitPublications(t, e.grace, ch, len(byOffset))
		checkStream(t, fmt.Sprintf("node %d", n), evs, epoch, byOffset)
		pubs, sp := e.history(t, n, ch, broker.HistoryOptions{Limit: -1})
		if sp.Offset != uint64(len(byOffset)) || sp.Epoch != epoch || len(pubs) != len(byOffset) {
			t.Fatalf("node %d: history of %d at %+v", n, len(pubs), sp)
		}
	}
}

// A node receives only the channels it subscribed to.
func testCrossNodeInterest(t *testing.T, e *env) {
	ch, sentinel := e.channel("interest"), e.channel("interest-sentinel")
	e.subscribe(t, 1, ch)
	e.subscribeAll(t, sentinel)
	e.settle(t, ch, []int{0}, []int{1})
	e.settle(t, sentinel, []int{0}, allNodes(e))
	e.publish(t, 0, ch, "h", withHistory(10))
	e.publish(t, 0, ch, "p", broker.PublishOptions{})
	if err := e.node(0).Broker.PublishJoin(e.ctx(t), ch, &broker.ClientInfo{ClientID: "c"}); err != nil {
		t.Fatal(err)
	}
	e.node(1).Recorder.Wait(t, e.grace, "three events on the subscribed node", func() bool {
		return len(e.events(1, ch)) == 3
	})
	e.publish(t, 0, sentinel, "sentinel", broker.PublishOptions{})
	for n := range e.nodes {
		e.waitPubs(t, n, sentinel, 1)
		if n != 1 && len(e.node(n).Recorder.Events(ch)) != 0 {
			t.Fatalf("node %d did not subscribe and received %v", n, e.node(n).Recorder.Events(ch))
		}
	}
}

// Publications without history reach every subscribed node once.
func testCrossNodeNoHistory(t *testing.T, e *env) {
	ch := e.channel("fanout-nohistory")
	e.subscribeAll(t, ch)
	e.settle(t, ch, []int{0}, allNodes(e))
	var want []string
	for i := range 10 {
		data := fmt.Sprintf("p%d", i)
		e.publish(t, 0, ch, data, broker.PublishOptions{})
		want = append(want, data)
	}
	for n := range e.nodes {
		e.waitPubs(t, n, ch, len(want))
		// Without offsets there is no order to check, only "each once".
		got := datas(eventPubs(e.pubs(n, ch)))
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("node %d received %q, want %q", n, got, want)
		}
	}
}

// Publishers on every node at once still give one contiguous stream that
// every node receives in order.
func testCrossNodeConcurrentPublishers(t *testing.T, e *env) {
	ch := e.channel("cross-concurrent")
	e.subscribeAll(t, ch)
	byOffset, epoch := publishConcurrently(t, e, ch, 2*len(e.nodes), 30)
	for n, node := range e.nodes {
		evs := node.Recorder.WaitPublications(t, e.grace, ch, len(byOffset))
		checkStream(t, fmt.Sprintf("node %d", n), evs, epoch, byOffset)
	}
}
