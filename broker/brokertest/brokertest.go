// Package brokertest is the conformance suite for implementations of
// broker.Broker and broker.PresenceManager. Every promise of package broker
// is a test here: offsets and epochs, bounded history, recovery queries,
// idempotent publishing, ordered delivery, interest, presence, and — when a
// Setup holds several nodes that share one backend — fan-out across nodes.
//
// A broker's own tests call Run with a function that builds fresh,
// unstarted nodes:
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, func(t *testing.T) brokertest.Setup {
//			return brokertest.Setup{Brokers: []broker.Broker{mybroker.New()}}
//		})
//	}
//
// Run starts each node with its own Recorder and closes it when the test
// ends. Tests use channel names unique to the test, so nodes built by one
// call may share a backend (a server, a cluster) with those of another, and
// some tests run in parallel. Waits are polls with deadlines, never sleeps
// that stand for an assertion.
//
// Delivery without history is at most once, and a broker may make a new
// subscription effective on other nodes a moment after Subscribe returns
// (a message bus propagates interest asynchronously). Tests of such
// deliveries across nodes therefore first publish probe publications until
// one reaches every subscribed node, and ignore them afterwards. Deliveries
// with history are tested without that help: they must not be lost.
package brokertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/broker"
)

// Setup is what the suite tests: one or more nodes that share one backend,
// so that a publication on any node reaches the subscribers of every node.
type Setup struct {
	// Brokers are the nodes, not yet started. Run starts each with its own
	// Recorder and closes those that implement broker.Closer when the test
	// ends. At least one.
	Brokers []broker.Broker
	// Presence are the nodes' presence managers, index-aligned with
	// Brokers. A missing or nil entry falls back to the broker itself when
	// it implements broker.PresenceManager; presence tests are skipped when
	// no node has one.
	Presence []broker.PresenceManager
	// PresenceTTL is the TTL the presence managers were built with. Zero
	// skips the presence expiry test.
	PresenceTTL time.Duration
	// Grace bounds how long an effect may take to become observable after
	// the moment it is due: a delivery after Publish returned, an expiry
	// after its TTL. Defaults to 5 seconds.
	Grace time.Duration
}

// suiteNode is a started node of a Setup.
type suiteNode struct {
	Broker   broker.Broker
	Presence broker.PresenceManager // nil when the node has none
	Recorder *Recorder
}

type suiteTest struct {
	name     string
	minNodes int  // skipped when the Setup has fewer nodes
	parallel bool // slow tests that wait for TTLs run in parallel
	fn       func(t *testing.T, e *env)
}

// Run runs the conformance suite. newSetup is called once per test and
// must return nodes that no other test is using.
func Run(t *testing.T, newSetup func(t *testing.T) Setup) {
	t.Helper()
	for _, tc := range suite() {
		t.Run(tc.name, func(t *testing.T) {
			if tc.parallel {
				t.Parallel()
			}
			e := start(t, newSetup)
			if len(e.nodes) < tc.minNodes {
				t.Skipf("needs %d nodes sharing a backend, the setup has %d", tc.minNodes, len(e.nodes))
			}
			tc.fn(t, e)
		})
	}
}

func suite() []suiteTest {
	return []suiteTest{
		{name: "PublishOffsetsAndEpoch", fn: testPublishOffsetsAndEpoch},
		{name: "PublicationFields", fn: testPublicationFields},
		{name: "NoHistory", fn: testNoHistory},
		{name: "FreshStreamEpoch", fn: testFreshStreamEpoch},
		{name: "HistorySize", fn: testHistorySize},
		{name: "HistoryQueries", fn: testHistoryQueries},
		{name: "HistoryEpochMismatch", fn: testHistoryEpochMismatch},
		{name: "HistoryTTLRequired", fn: testHistoryTTLRequired},
		{name: "RemoveHistory", fn: testRemoveHistory},
		{name: "Idempotency", fn: testIdempotency},
		{name: "IdempotencyAfterTrim", fn: testIdempotencyAfterTrim},
		{name: "IdempotencyNoHistory", fn: testIdempotencyNoHistory},
		{name: "IdempotencyConcurrent", fn: testIdempotencyConcurrent},
		{name: "ConcurrentPublishers", fn: testConcurrentPublishers},
		{name: "OrderedDelivery", fn: testOrderedDelivery},
		{name: "Unsubscribe", fn: testUnsubscribe},
		{name: "JoinLeave", fn: testJoinLeave},
		{name: "ChannelNames", fn: testChannelNames},
		{name: "Presence", fn: testPresence},
		{name: "CloseTwice", fn: testCloseTwice},
		{name: "CrossNodeFanOut", minNodes: 2, fn: testCrossNodeFanOut},
		{name: "CrossNodeInterest", minNodes: 2, fn: testCrossNodeInterest},
		{name: "CrossNodeNoHistory", minNodes: 2, fn: testCrossNodeNoHistory},
		{name: "CrossNodeConcurrentPublishers", minNodes: 2, fn: testCrossNodeConcurrentPublishers},
		{name: "HistoryTTL", parallel: true, fn: testHistoryTTL},
		{name: "HistoryMetaTTL", parallel: true, fn: testHistoryMetaTTL},
		{name: "HistoryMetaTTLExtended", parallel: true, fn: testHistoryMetaTTLExtended},
		{name: "PresenceExpiry", parallel: true, fn: testPresenceExpiry},
	}
}

// env is one test's started nodes.
type env struct {
	nodes       []*suiteNode
	presenceTTL time.Duration
	grace       time.Duration
	prefix      string // unique per test, for channel names
}

func start(t *testing.T, newSetup func(t *testing.T) Setup) *env {
	t.Helper()
	s := newSetup(t)
	if len(s.Brokers) == 0 {
		t.Fatal("brokertest: Setup has no brokers")
	}
	e := &env{presenceTTL: s.PresenceTTL, grace: s.Grace, prefix: "bt" + randomHex(4) + "-"}
	if e.grace <= 0 {
		e.grace = 5 * time.Second
	}
	for i, b := range s.Brokers {
		n := &suiteNode{Broker: b, Recorder: NewRecorder(t)}
		if i < len(s.Presence) && s.Presence[i] != nil {
			n.Presence = s.Presence[i]
		} else if pm, ok := b.(broker.PresenceManager); ok {
			n.Presence = pm
		}
		e.nodes = append(e.nodes, n)
	}
	for i, n := range e.nodes {
		// Run's context lives as long as the test: deliveries stop when
		// it is done.
		if err := n.Broker.Run(t.Context(), n.Recorder); err != nil {
			t.Fatalf("node %d: Run: %v", i, err)
		}
		t.Cleanup(func() { closeNode(t, n, e.grace) })
	}
	return e
}

func closeNode(t *testing.T, n *suiteNode, grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if c, ok := n.Broker.(broker.Closer); ok {
		if err := c.Close(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("Close: %v", err)
		}
	}
	if n.Presence != nil && any(n.Presence) != any(n.Broker) {
		if c, ok := n.Presence.(broker.Closer); ok {
			if err := c.Close(ctx); err != nil {
				t.Logf("presence Close: %v", err)
			}
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// channel returns a channel name unique to this test.
func (e *env) channel(name string) string { return e.prefix + name }

// ctx returns a context for one call.
func (e *env) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), e.grace)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) node(i int) *suiteNode { return e.nodes[i%len(e.nodes)] }

func withHistory(size int) broker.PublishOptions {
	return broker.PublishOptions{HistorySize: size, HistoryTTL: time.Hour}
}

func (e *env) publish(t *testing.T, node int, ch, data string, opts broker.PublishOptions) broker.StreamPosition {
	t.Helper()
	sp, err := e.node(node).Broker.Publish(e.ctx(t), ch, []byte(data), opts)
	if err != nil {
		t.Fatalf("node %d: Publish(%q, %q): %v", node%len(e.nodes), ch, data, err)
	}
	return sp
}

func (e *env) history(t *testing.T, node int, ch string, opts broker.HistoryOptions) ([]*broker.Publication, broker.StreamPosition) {
	t.Helper()
	pubs, sp, err := e.node(node).Broker.History(e.ctx(t), ch, opts)
	if err != nil {
		t.Fatalf("node %d: History(%q): %v", node%len(e.nodes), ch, err)
	}
	return pubs, sp
}

func (e *env) subscribe(t *testing.T, node int, ch string) {
	t.Helper()
	if err := e.node(node).Broker.Subscribe(e.ctx(t), ch); err != nil {
		t.Fatalf("node %d: Subscribe(%q): %v", node%len(e.nodes), ch, err)
	}
}

func (e *env) subscribeAll(t *testing.T, ch string) {
	t.Helper()
	for i := range e.nodes {
		e.subscribe(t, i, ch)
	}
}

// eventually polls f until it returns nil, failing with its last error
// after timeout.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := 5 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %v: %v", timeout, err)
		}
		time.Sleep(wait)
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// datas returns the data of pubs as strings.
func datas(pubs []*broker.Publication) []string {
	out := make([]string, len(pubs))
	for i, p := range pubs {
		out[i] = string(p.Data)
	}
	return out
}

func offsets(pubs []*broker.Publication) []uint64 {
	out := make([]uint64, len(pubs))
	for i, p := range pubs {
		out[i] = p.Offset
	}
	return out
}

func eventPubs(evs []Event) []*broker.Publication {
	out := make([]*broker.Publication, len(evs))
	for i, ev := range evs {
		out[i] = ev.Pub
	}
	return out
}

func fmtOffsets(from, to uint64) []uint64 {
	var out []uint64
	for o := from; o <= to; o++ {
		out = append(out, o)
	}
	return out
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// probePrefix starts the data of the publications settle sends.
const probePrefix = "brokertest-probe:"

func isProbe(ev Event) bool {
	return ev.Kind == KindPublication && strings.HasPrefix(string(ev.Pub.Data), probePrefix)
}

// events returns what node n received for ch, without settle's probes.
func (e *env) events(n int, ch string) []Event {
	var out []Event
	for _, ev := range e.node(n).Recorder.Events(ch) {
		if !isProbe(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// pubs returns the publications node n received for ch, without probes.
func (e *env) pubs(n int, ch string) []Event {
	var out []Event
	for _, ev := range e.events(n, ch) {
		if ev.Kind == KindPublication {
			out = append(out, ev)
		}
	}
	return out
}

// waitPubs waits until node n received at least count publications on ch
// besides probes.
func (e *env) waitPubs(t *testing.T, n int, ch string, count int) []Event {
	t.Helper()
	e.node(n).Recorder.Wait(t, e.grace, fmt.Sprintf("%d publications on %q at node %d", count, ch, n), func() bool {
		return len(e.pubs(n, ch)) >= count
	})
	return e.pubs(n, ch)
}

// settle waits until publications without history from each node in from
// reach each node in to that subscribed to ch. A broker may take a moment
// to make a subscription effective on other nodes (a message bus
// propagates interest asynchronously), and delivery without history is at
// most once: settle publishes probe publications until each arrived.
func (e *env) settle(t *testing.T, ch string, from, to []int) {
	t.Helper()
	deadline := time.Now().Add(e.grace)
	for round := 0; ; round++ {
		pending := false
		for _, p := range from {
			for _, s := range to {
				prefix := fmt.Sprintf("%s%d:", probePrefix, p%len(e.nodes))
				found := false
				for _, ev := range e.node(s).Recorder.Publications(ch) {
					if strings.HasPrefix(string(ev.Pub.Data), prefix) {
						found = true
						break
					}
				}
				pending = pending || !found
			}
		}
		if !pending {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscriptions to %q did not take effect on every node within %v", ch, e.grace)
		}
		for _, p := range from {
			e.publish(t, p, ch, fmt.Sprintf("%s%d:%d", probePrefix, p%len(e.nodes), round), broker.PublishOptions{})
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func allNodes(e *env) []int {
	out := make([]int, len(e.nodes))
	for i := range out {
		out[i] = i
	}
	return out
}
