package brokertest

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/wsgate/wsgate/broker"
)

// Offsets grow by one per publication starting at 1, under one epoch, and
// History returns the stream oldest first with its position.
func testPublishOffsetsAndEpoch(t *testing.T, e *env) {
	ch := e.channel("offsets")
	var epoch string
	for i := 1; i <= 5; i++ {
		sp := e.publish(t, i, ch, fmt.Sprintf("m%d", i), withHistory(10))
		if sp.Offset != uint64(i) {
			t.Fatalf("publication %d got offset %d", i, sp.Offset)
		}
		if sp.Epoch == "" {
			t.Fatal("empty epoch")
		}
		if epoch == "" {
			epoch = sp.Epoch
		}
		if sp.Epoch != epoch {
			t.Fatalf("epoch changed from %q to %q within one stream life", epoch, sp.Epoch)
		}
	}
	for n := range e.nodes {
		pubs, sp := e.history(t, n, ch, broker.HistoryOptions{Limit: -1})
		if sp != (broker.StreamPosition{Offset: 5, Epoch: epoch}) {
			t.Fatalf("node %d: position %+v, want offset 5 epoch %q", n, sp, epoch)
		}
		if want := []string{"m1", "m2", "m3", "m4", "m5"}; !slices.Equal(datas(pubs), want) {
			t.Fatalf("node %d: history %q, want %q", n, datas(pubs), want)
		}
		if !slices.Equal(offsets(pubs), fmtOffsets(1, 5)) {
			t.Fatalf("node %d: history offsets %v", n, offsets(pubs))
		}
	}
}

// A publication's data, publisher, tags and time reach subscribers and
// history unchanged.
func testPublicationFields(t *testing.T, e *env) {
	ch := e.channel("fields")
	e.subscribe(t, 0, ch)
	data := make([]byte, 256)
	for i := range data {
		data[i] = byte(i)
	}
	info := &broker.ClientInfo{ClientID: "c1", UserID: "u1", ConnInfo: []byte(`{"name":"ann"}`), ChanInfo: []byte(`{"role":"mod"}`)}
	tags := map[string]string{"kind": "note", "empty": "", "ünï": "cødé\n"}
	opts := withHistory(10)
	opts.ClientInfo = info
	opts.Tags = tags
	before := time.Now().Add(-time.Minute).UnixMilli()
	sp, err := e.node(0).Broker.Publish(e.ctx(t), ch, data, opts)
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now().Add(time.Minute).UnixMilli()

	check := func(where string, pub *broker.Publication) {
		t.Helper()
		if !bytes.Equal(pub.Data, data) {
			t.Errorf("%s: data changed: %q", where, pub.Data)
		}
		if pub.Offset != sp.Offset {
			t.Errorf("%s: offset %d, want %d", where, pub.Offset, sp.Offset)
		}
		if pub.Info == nil || pub.Info.ClientID != info.ClientID || pub.Info.UserID != info.UserID ||
			!bytes.Equal(pub.Info.ConnInfo, info.ConnInfo) || !bytes.Equal(pub.Info.ChanInfo, info.ChanInfo) {
			t.Errorf("%s: info %+v, want %+v", where, pub.Info, info)
		}
		if !maps.Equal(pub.Tags, tags) {
			t.Errorf("%s: tags %q, want %q", where, pub.Tags, tags)
		}
		if pub.Time < before || pub.Time > after {
			t.Errorf("%s: time %d is not the publication's (Unix ms around %d)", where, pub.Time, time.Now().UnixMilli())
		}
	}
	evs := e.node(0).Recorder.WaitPublications(t, e.grace, ch, 1)
	check("delivery", evs[0].Pub)
	if evs[0].Pos != sp {
		t.Errorf("delivery position %+v, Publish returned %+v", evs[0].Pos, sp)
	}
	pubs, _ := e.history(t, 0, ch, broker.HistoryOptions{Limit: -1})
	if len(pubs) != 1 {
		t.Fatalf("history has %d publications", len(pubs))
	}
	check("history", pubs[0])

	// Without publisher or tags, none come back.
	sp2 := e.publish(t, 0, ch, `"plain"`, withHistory(10))
	evs = e.node(0).Recorder.WaitPublications(t, e.grace, ch, 2)
	if p := evs[1].Pub; p.Info != nil || len(p.Tags) != 0 || p.Offset != sp2.Offset {
		t.Errorf("plain publication delivered as %+v", p)
	}
}

// A channel without history fans out without offsets and keeps nothing.
func testNoHistory(t *testing.T, e *env) {
	ch := e.channel("nohistory")
	e.subscribe(t, 0, ch)
	sp := e.publish(t, 0, ch, "a", broker.PublishOptions{})
	if sp != (broker.StreamPosition{}) {
		t.Fatalf("Publish without history returned %+v, want the zero position", sp)
	}
	evs := e.node(0).Recorder.WaitPublications(t, e.grace, ch, 1)
	if evs[0].Pub.Offset != 0 || evs[0].Pos != (broker.StreamPosition{}) || string(evs[0].Pub.Data) != "a" {
		t.Fatalf("delivered %+v at %+v", evs[0].Pub, evs[0].Pos)
	}
	pubs, pos := e.history(t, 0, ch, broker.HistoryOptions{Limit: -1})
	if len(pubs) != 0 || pos.Offset != 0 {
		t.Fatalf("history of a channel without history: %d publications at %+v", len(pubs), pos)
	}
}

// History of a channel that never had history returns offset 0 and an
// epoch that stays, and the first publication continues that stream.
func testFreshStreamEpoch(t *testing.T, e *env) {
	ch := e.channel("fresh")
	pubs, sp := e.history(t, 0, ch, broker.HistoryOptions{Limit: -1})
	if len(pubs) != 0 || sp.Offset != 0 || sp.Epoch == "" {
		t.Fatalf("fresh stream: %d publications at %+v, want none at offset 0 with an epoch", len(pubs), sp)
	}
	for n := range e.nodes {
		_, again := e.history(t, n, ch, broker.HistoryOptions{})
		if again != sp {
			t.Fatalf("node %d: position %+v, want the stable %+v", n, again, sp)
		}
	}
	got := e.publish(t, len(e.nodes)-1, ch, "first", withHistory(5))
	if got != (broker.StreamPosition{Offset: 1, Epoch: sp.Epoch}) {
		t.Fatalf("first publication at %+v, want offset 1 in epoch %q", got, sp.Epoch)
	}
}

// The stream keeps only the last HistorySize publications; offsets go on.
func testHistorySize(t *testing.T, e *env) {
	ch := e.channel("size")
	var last broker.StreamPosition
	for i := 1; i <= 10; i++ {
		last = e.publish(t, i, ch, fmt.Sprintf("m%d", i), withHistory(3))
	}
	for n := range e.nodes {
		pubs, sp := e.history(t, n, ch, broker.HistoryOptions{Limit: -1})
		if sp != last || sp.Offset != 10 {
			t.Fatalf("node %d: position %+v, want %+v", n, sp, last)
		}
		if want := []string{"m8", "m9", "m10"}; !slices.Equal(datas(pubs), want) {
			t.Fatalf("node %d: history %q, want %q", n, datas(pubs), want)
		}
	}
}

// Since, Limit and Reverse select from the stream as documented.
func testHistoryQueries(t *testing.T, e *env) {
	ch := e.channel("queries")
	var epoch string
	for i := 1; i <= 6; i++ {
		epoch = e.publish(t, i, ch, fmt.Sprintf("m%d", i), withHistory(10)).Epoch
	}
	at := func(o uint64) *broker.StreamPosition { return &broker.StreamPosition{Offset: o, Epoch: epoch} }
	cases := []struct {
		name string
		opts broker.HistoryOptions
		want []uint64
	}{
		{"All", broker.HistoryOptions{Limit: -1}, fmtOffsets(1, 6)},
		{"None", broker.HistoryOptions{Limit: 0}, nil},
		{"OldestTwo", broker.HistoryOptions{Limit: 2}, []uint64{1, 2}},
		{"LimitAboveSize", broker.HistoryOptions{Limit: 100}, fmtOffsets(1, 6)},
		{"ReverseAll", broker.HistoryOptions{Limit: -1, Reverse: true}, []uint64{6, 5, 4, 3, 2, 1}},
		{"NewestTwo", broker.HistoryOptions{Limit: 2, Reverse: true}, []uint64{6, 5}},
		{"Since", broker.HistoryOptions{Since: at(3), Limit: -1}, []uint64{4, 5, 6}},
		{"SinceLimit", broker.HistoryOptions{Since: at(3), Limit: 2}, []uint64{4, 5}},
		// With Reverse, Since pages backwards: the publications before it.
		{"SinceReverse", broker.HistoryOptions{Since: at(3), Limit: -1, Reverse: true}, []uint64{2, 1}},
		{"SinceReverseLimit", broker.HistoryOptions{Since: at(5), Limit: 2, Reverse: true}, []uint64{4, 3}},
		{"SinceOneReverse", broker.HistoryOptions{Since: at(1), Limit: -1, Reverse: true}, nil},
		{"SinceZeroReverse", broker.HistoryOptions{Since: at(0), Limit: -1, Reverse: true}, nil},
		{"SinceTopReverse", broker.HistoryOptions{Since: at(6), Limit: -1, Reverse: true}, []uint64{5, 4, 3, 2, 1}},
		{"SinceAboveTopReverse", broker.HistoryOptions{Since: at(9), Limit: -1, Reverse: true}, []uint64{6, 5, 4, 3, 2, 1}},
		{"SinceZero", broker.HistoryOptions{Since: at(0), Limit: -1}, fmtOffsets(1, 6)},
		{"SinceTop", broker.HistoryOptions{Since: at(6), Limit: -1}, nil},
		{"SinceAboveTop", broker.HistoryOptions{Since: at(9), Limit: -1}, nil},
		{"SinceNoneWanted", broker.HistoryOptions{Since: at(3), Limit: 0}, nil},
		{"MetaTTL", broker.HistoryOptions{Limit: -1, MetaTTL: time.Hour}, fmtOffsets(1, 6)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for n := range e.nodes {
				pubs, sp := e.history(t, n, ch, tc.opts)
				if sp != *at(6) {
					t.Fatalf("node %d: position %+v, want offset 6 epoch %q", n, sp, epoch)
				}
				if got := offsets(pubs); !slices.Equal(got, tc.want) {
					t.Fatalf("node %d: offsets %v, want %v", n, got, tc.want)
				}
				for _, p := range pubs {
					if string(p.Data) != fmt.Sprintf("m%d", p.Offset) {
						t.Fatalf("node %d: offset %d carries %q", n, p.Offset, p.Data)
					}
				}
			}
		})
	}
}

// A Since position from another epoch selects as if there were no Since.
func testHistoryEpochMismatch(t *testing.T, e *env) {
	ch := e.channel("epochs")
	var epoch string
	for i := 1; i <= 4; i++ {
		epoch = e.publish(t, 0, ch, fmt.Sprintf("m%d", i), withHistory(10)).Epoch
	}
	other := &broker.StreamPosition{Offset: 2, Epoch: "not-" + epoch}
	pubs, sp := e.history(t, 0, ch, broker.HistoryOptions{Since: other, Limit: -1})
	if sp.Epoch != epoch || !slices.Equal(offsets(pubs), fmtOffsets(1, 4)) {
		t.Fatalf("since another epoch: offsets %v at %+v, want all four in epoch %q", offsets(pubs), sp, epoch)
	}
	pubs, _ = e.history(t, 0, ch, broker.HistoryOptions{Since: other, Limit: 1, Reverse: true})
	if !slices.Equal(offsets(pubs), []uint64{4}) {
		t.Fatalf("since another epoch, newest one: offsets %v, want [4]", offsets(pubs))
	}
}

// HistorySize without HistoryTTL is refused.
func testHistoryTTLRequired(t *testing.T, e *env) {
	_, err := e.node(0).Broker.Publish(e.ctx(t), e.channel("nottl"), []byte("x"), broker.PublishOptions{HistorySize: 5})
	if err == nil {
		t.Fatal("Publish with HistorySize and no HistoryTTL succeeded")
	}
}

// RemoveHistory drops the publications and keeps offset and epoch.
func testRemoveHistory(t *testing.T, e *env) {
	ch := e.channel("remove")
	var last broker.StreamPosition
	for i := 1; i <= 3; i++ {
		last = e.publish(t, 0, ch, fmt.Sprintf("m%d", i), withHistory(10))
	}
	if err := e.node(len(e.nodes)-1).Broker.RemoveHistory(e.ctx(t), ch); err != nil {
		t.Fatal(err)
	}
	for n := range e.nodes {
		pubs, sp := e.history(t, n, ch, broker.HistoryOptions{Limit: -1})
		if len(pubs) != 0 || sp != last {
			t.Fatalf("node %d: after RemoveHistory %d publications at %+v, want none at %+v", n, len(pubs), sp, last)
		}
		pubs, _ = e.history(t, n, ch, broker.HistoryOptions{Since: &broker.StreamPosition{Offset: 1, Epoch: last.Epoch}, Limit: -1})
		if len(pubs) != 0 {
			t.Fatalf("node %d: since offset 1 after RemoveHistory: %d publications", n, len(pubs))
		}
	}
	next := e.publish(t, 1, ch, "m4", withHistory(10))
	if next != (broker.StreamPosition{Offset: 4, Epoch: last.Epoch}) {
		t.Fatalf("after RemoveHistory the next publication is at %+v, want offset 4 epoch %q", next, last.Epoch)
	}
	pubs, _ := e.history(t, 0, ch, broker.HistoryOptions{Limit: -1})
	if !slices.Equal(datas(pubs), []string{"m4"}) {
		t.Fatalf("history after remove and publish: %q", datas(pubs))
	}
	if err := e.node(0).Broker.RemoveHistory(e.ctx(t), e.channel("never-published")); err != nil {
		t.Fatalf("RemoveHistory of an unknown channel: %v", err)
	}
}

// Publications expire after HistoryTTL; the stream's offset and epoch
// stay for the meta TTL.
func testHistoryTTL(t *testing.T, e *env) {
	ch := e.channel("ttl")
	opts := broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Second}
	e.publish(t, 0, ch, "m1", opts)
	last := e.publish(t, 0, ch, "m2", opts)
	eventually(t, opts.HistoryTTL+e.grace, func() error {
		pubs, sp := e.history(t, len(e.nodes)-1, ch, broker.HistoryOptions{Limit: -1})
		if sp != last {
			t.Fatalf("position %+v after the publications expired, want %+v", sp, last)
		}
		if len(pubs) != 0 {
			return errorf("%d publications still in history", len(pubs))
		}
		return nil
	})
	next := e.publish(t, 1, ch, "m3", opts)
	if next != (broker.StreamPosition{Offset: 3, Epoch: last.Epoch}) {
		t.Fatalf("after expiry the next publication is at %+v, want offset 3 epoch %q", next, last.Epoch)
	}
}

// When the meta TTL passes as well the stream is lost: it starts again at
// offset 1 under a new epoch.
func testHistoryMetaTTL(t *testing.T, e *env) {
	ch := e.channel("metattl")
	opts := broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Second, HistoryMetaTTL: 3 * time.Second}
	before := time.Now()
	first := e.publish(t, 0, ch, "m1", opts)

	// The publication goes first; until the meta TTL the position stays.
	eventually(t, opts.HistoryTTL+e.grace, func() error {
		pubs, sp := e.history(t, 0, ch, broker.HistoryOptions{Limit: -1})
		if len(pubs) != 0 {
			return errorf("%d publications still in history", len(pubs))
		}
		if sp != first && time.Since(before) < opts.HistoryTTL+opts.HistoryMetaTTL {
			t.Fatalf("position %+v before the meta TTL passed, want %+v", sp, first)
		}
		return nil
	})
	var reborn broker.StreamPosition
	eventually(t, opts.HistoryTTL+opts.HistoryMetaTTL+e.grace, func() error {
		_, sp := e.history(t, 0, ch, broker.HistoryOptions{})
		if sp.Epoch == first.Epoch {
			return errorf("epoch %q still alive", sp.Epoch)
		}
		reborn = sp
		return nil
	})
	if reborn.Offset != 0 || reborn.Epoch == "" {
		t.Fatalf("lost stream reborn at %+v, want offset 0 with a new epoch", reborn)
	}
	next := e.publish(t, len(e.nodes)-1, ch, "again", opts)
	if next != (broker.StreamPosition{Offset: 1, Epoch: reborn.Epoch}) {
		t.Fatalf("first publication of the new life at %+v, want offset 1 epoch %q", next, reborn.Epoch)
	}
}

// History with MetaTTL keeps a stream alive past the meta TTL its last
// publication gave it.
func testHistoryMetaTTLExtended(t *testing.T, e *env) {
	ch := e.channel("metattl-extended")
	opts := broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Second, HistoryMetaTTL: time.Second}
	before := time.Now()
	first := e.publish(t, 0, ch, "m1", opts)
	if _, sp := e.history(t, 0, ch, broker.HistoryOptions{MetaTTL: time.Hour}); sp != first {
		t.Fatalf("position %+v, want %+v", sp, first)
	}
	// Without the extension the stream would be lost two seconds after the
	// publication; look after that, with the grace a TTL may take.
	lost := opts.HistoryTTL + opts.HistoryMetaTTL
	time.Sleep(time.Until(before.Add(lost + min(e.grace, 3*time.Second))))
	for n := range e.nodes {
		pubs, sp := e.history(t, n, ch, broker.HistoryOptions{Limit: -1})
		if sp != first || len(pubs) != 0 {
			t.Fatalf("node %d: %d publications at %+v after the extended meta TTL, want none at %+v", n, len(pubs), sp, first)
		}
	}
	if next := e.publish(t, 1, ch, "m2", opts); next != (broker.StreamPosition{Offset: 2, Epoch: first.Epoch}) {
		t.Fatalf("next publication at %+v, want offset 2 in epoch %q", next, first.Epoch)
	}
}

// A second Publish with the same idempotency key publishes nothing and
// returns the first position, on any node.
func testIdempotency(t *testing.T, e *env) {
	ch := e.channel("idem")
	keyed := func(key string) broker.PublishOptions {
		o := withHistory(10)
		o.IdempotencyKey = key
		return o
	}
	first := e.publish(t, 0, ch, "a", keyed("k1"))
	for n := range e.nodes {
		if again := e.publish(t, n, ch, "b", keyed("k1")); again != first {
			t.Fatalf("node %d: repeated key returned %+v, want %+v", n, again, first)
		}
	}
	second := e.publish(t, 0, ch, "c", keyed("k2"))
	if second.Offset != first.Offset+1 || second.Epoch != first.Epoch {
		t.Fatalf("another key published at %+v after %+v", second, first)
	}
	pubs, _ := e.history(t, 0, ch, broker.HistoryOptions{Limit: -1})
	if !slices.Equal(datas(pubs), []string{"a", "c"}) {
		t.Fatalf("history %q, want [a c]", datas(pubs))
	}
	other := e.publish(t, 0, e.channel("idem-other"), "d", keyed("k1"))
	if other.Offset != 1 {
		t.Fatalf("the same key on another channel published at %+v, want offset 1", other)
	}
}

// A repeated key returns the first position even when history no longer
// holds that publication.
func testIdempotencyAfterTrim(t *testing.T, e *env) {
	ch := e.channel("idem-trim")
	keyed := withHistory(1)
	keyed.IdempotencyKey = "k"
	first := e.publish(t, 0, ch, "a", keyed)
	for i := range 3 {
		e.publish(t, i, ch, fmt.Sprintf("later%d", i), withHistory(1))
	}
	for n := range e.nodes {
		if again := e.publish(t, n, ch, "b", keyed); again != first {
			t.Fatalf("node %d: repeated key after trimming returned %+v, want %+v", n, again, first)
		}
	}
	pubs, sp := e.history(t, 0, ch, broker.HistoryOptions{Limit: -1})
	if sp.Offset != first.Offset+3 || !slices.Equal(datas(pubs), []string{"later2"}) {
		t.Fatalf("history %q at %+v", datas(pubs), sp)
	}
}

// Without history a repeated key is not fanned out again.
func testIdempotencyNoHistory(t *testing.T, e *env) {
	ch := e.channel("idem-nohistory")
	e.subscribeAll(t, ch)
	e.settle(t, ch, allNodes(e), allNodes(e))
	opts := broker.PublishOptions{IdempotencyKey: "k"}
	if sp := e.publish(t, 0, ch, "a", opts); sp != (broker.StreamPosition{}) {
		t.Fatalf("position %+v without history", sp)
	}
	for n := range e.nodes {
		e.publish(t, n, ch, "b", opts)
	}
	// A sentinel after the repeats: once it is delivered, a delivered
	// repeat would have been delivered before it.
	e.publish(t, 0, ch, "sentinel", broker.PublishOptions{})
	for n, node := range e.nodes {
		node.Recorder.Wait(t, e.grace, "the sentinel", func() bool {
			pubs := e.pubs(n, ch)
			return len(pubs) > 0 && string(pubs[len(pubs)-1].Pub.Data) == "sentinel"
		})
		if got := datas(eventPubs(e.pubs(n, ch))); !slices.Equal(got, []string{"a", "sentinel"}) {
			t.Fatalf("node %d received %q, want [a sentinel]", n, got)
		}
	}
}

// Concurrent publishes with one key publish once.
func testIdempotencyConcurrent(t *testing.T, e *env) {
	ch := e.channel("idem-concurrent")
	const n = 8
	results := make(chan broker.StreamPosition, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			opts := withHistory(10)
			opts.IdempotencyKey = "same"
			sp, err := e.node(i).Broker.Publish(e.ctx(t), ch, []byte(fmt.Sprintf("p%d", i)), opts)
			if err != nil {
				errs <- err
				return
			}
			results <- sp
		}()
	}
	var first broker.StreamPosition
	for i := range n {
		select {
		case err := <-errs:
			t.Fatal(err)
		case sp := <-results:
			if i == 0 {
				first = sp
			} else if sp != first {
				t.Fatalf("concurrent publishes with one key returned %+v and %+v", first, sp)
			}
		}
	}
	pubs, sp := e.history(t, 0, ch, broker.HistoryOptions{Limit: -1})
	if len(pubs) != 1 || sp != first {
		t.Fatalf("history holds %d publications at %+v, want one at %+v", len(pubs), sp, first)
	}
}

// Many publishers on one channel get contiguous offsets, each once, and
// history holds them in offset order.
func testConcurrentPublishers(t *testing.T, e *env) {
	ch := e.channel("concurrent")
	const workers, each = 8, 25
	type result struct {
		sp   broker.StreamPosition
		data string
		err  error
	}
	results := make(chan result, workers*each)
	for w := range workers {
		go func() {
			for i := range each {
				data := fmt.Sprintf("w%d-%d", w, i)
				sp, err := e.node(w).Broker.Publish(e.ctx(t), ch, []byte(data), withHistory(1000))
				results <- result{sp, data, err}
			}
		}()
	}
	byOffset := make(map[uint64]string)
	var epoch string
	for range workers * each {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if prev, dup := byOffset[r.sp.Offset]; dup {
			t.Fatalf("offset %d given to %q and %q", r.sp.Offset, prev, r.data)
		}
		byOffset[r.sp.Offset] = r.data
		if epoch == "" {
			epoch = r.sp.Epoch
		} else if r.sp.Epoch != epoch {
			t.Fatalf("epochs %q and %q in one stream life", epoch, r.sp.Epoch)
		}
	}
	for o := uint64(1); o <= workers*each; o++ {
		if _, ok := byOffset[o]; !ok {
			t.Fatalf("offset %d never returned", o)
		}
	}
	pubs, _ := e.history(t, 0, ch, broker.HistoryOptions{Limit: -1})
	if !slices.Equal(offsets(pubs), fmtOffsets(1, workers*each)) {
		t.Fatalf("history offsets %v", offsets(pubs))
	}
	for _, p := range pubs {
		if byOffset[p.Offset] != string(p.Data) {
			t.Fatalf("history has %q at offset %d, Publish put %q there", p.Data, p.Offset, byOffset[p.Offset])
		}
	}
}
