package brokertest

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate/broker"
)

// EventKind says what a broker delivered.
type EventKind int

// The kinds of Event.
const (
	KindPublication EventKind = iota + 1
	KindJoin
	KindLeave
)

// String returns "publication", "join" or "leave".
func (k EventKind) String() string {
	switch k {
	case KindPublication:
		return "publication"
	case KindJoin:
		return "join"
	case KindLeave:
		return "leave"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one delivery to an EventHandler.
type Event struct {
	Kind EventKind
	// Pub and Pos are set for publications.
	Pub *broker.Publication
	Pos broker.StreamPosition
	// Info is set for joins and leaves.
	Info *broker.ClientInfo
}

// Recorder is a broker.EventHandler that keeps every delivery, per
// channel, and checks the delivery contract as events arrive: calls for
// one channel never overlap. A violation fails the test it was created
// for. All methods are safe for concurrent use.
type Recorder struct {
	t testing.TB

	mu      sync.Mutex
	events  map[string][]Event
	busy    map[string]bool
	gaps    [][]string
	changed chan struct{} // closed and replaced on every event
}

// NewRecorder returns an empty Recorder that reports contract violations
// to t.
func NewRecorder(t testing.TB) *Recorder {
	return &Recorder{
		t:       t,
		events:  make(map[string][]Event),
		busy:    make(map[string]bool),
		changed: make(chan struct{}),
	}
}

var _ broker.EventHandler = (*Recorder)(nil)

// HandlePublication records a publication.
func (r *Recorder) HandlePublication(ch string, pub *broker.Publication, sp broker.StreamPosition) {
	r.record(ch, Event{Kind: KindPublication, Pub: pub, Pos: sp})
}

// HandleJoin records a join.
func (r *Recorder) HandleJoin(ch string, info *broker.ClientInfo) {
	r.record(ch, Event{Kind: KindJoin, Info: info})
}

// HandleLeave records a leave.
func (r *Recorder) HandleLeave(ch string, info *broker.ClientInfo) {
	r.record(ch, Event{Kind: KindLeave, Info: info})
}

// HandleGap records a gap report.
func (r *Recorder) HandleGap(channels []string) {
	r.mu.Lock()
	r.gaps = append(r.gaps, slices.Clone(channels))
	r.notifyLocked()
	r.mu.Unlock()
}

func (r *Recorder) record(ch string, ev Event) {
	r.mu.Lock()
	if r.busy[ch] {
		r.mu.Unlock()
		r.t.Errorf("broker delivered to channel %q concurrently", ch)
		return
	}
	r.busy[ch] = true
	r.mu.Unlock()

	// Give an overlapping call a chance to show up: a broker that calls
	// concurrently is caught by the busy flag above.
	runtime.Gosched()

	r.mu.Lock()
	r.busy[ch] = false
	r.events[ch] = append(r.events[ch], ev)
	r.notifyLocked()
	r.mu.Unlock()
}

func (r *Recorder) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// Events returns a copy of what was delivered for ch, in delivery order.
func (r *Recorder) Events(ch string) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events[ch])
}

// Publications returns the publications delivered for ch, in delivery
// order.
func (r *Recorder) Publications(ch string) []Event {
	var pubs []Event
	for _, ev := range r.Events(ch) {
		if ev.Kind == KindPublication {
			pubs = append(pubs, ev)
		}
	}
	return pubs
}

// Gaps returns the gap reports received so far.
func (r *Recorder) Gaps() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.gaps)
}

// GapReported reports whether a gap was reported for ch, either by name
// or for every channel (a nil list).
func (r *Recorder) GapReported(ch string) bool {
	for _, g := range r.Gaps() {
		if g == nil || slices.Contains(g, ch) {
			return true
		}
	}
	return false
}

// Wait polls cond after every recorded event until it returns true, and
// fails the test with what when timeout passes first.
func (r *Recorder) Wait(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		changed := r.changed
		r.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			if cond() {
				return
			}
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// WaitPublications waits until at least n publications were delivered for
// ch and returns them.
func (r *Recorder) WaitPublications(t testing.TB, timeout time.Duration, ch string, n int) []Event {
	t.Helper()
	r.Wait(t, timeout, fmt.Sprintf("%d publications on %q", n, ch), func() bool {
		return len(r.Publications(ch)) >= n
	})
	return r.Publications(ch)
}
