package wsgate

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// Budget bounds the memory that a set of connections may hold in buffers:
// messages being reassembled or inflated, input held while reading is
// paused, received messages waiting for Read, and send queues. Share one
// Budget among every connection of a server (Options.Budget) so that no
// crowd of clients, each within its own limits, can exhaust the process
// together.
//
// When the connections hold more than the limit, the ones holding the most
// are closed until the total is back under 90% of it: with 1009 (message
// too big) when most of what a connection holds is input, with 1008
// (policy violation) when it is a send queue its peer does not read. Their
// errors wrap ErrMemoryBudget. The others keep working. Only connections
// holding at least 16 KiB are ever chosen, so size the limit to at least
// that much per connection you expect; per-connection limits (ReadLimit,
// SendQueueBytes, RecvQueueBytes) bound what one connection can take.
//
// Connections also stop offering compression to new peers (Upgrade does
// not negotiate permessage-deflate) while more than half of the budget is
// in use.
//
// A Budget is safe for concurrent use.
type Budget struct {
	limit     int64
	used      atomic.Int64
	evictions atomic.Uint64
	over      atomic.Bool // used went over limit: reclaim at the next safe point
	busy      atomic.Bool // a reclaim is running

	mu    sync.Mutex
	heavy map[*Conn]bool // connections holding heavyBytes or more; true once evicted
}

// heavyBytes is what a connection must hold to be a candidate for
// eviction.
const heavyBytes = 16 << 10

// NewBudget returns a budget of limit bytes. It panics if limit is not
// positive.
func NewBudget(limit int64) *Budget {
	if limit <= 0 {
		panic(fmt.Sprintf("wsgate: NewBudget(%d): the limit must be positive", limit))
	}
	return &Budget{limit: limit, heavy: make(map[*Conn]bool)}
}

// Limit returns the budget's limit in bytes.
func (b *Budget) Limit() int64 { return b.limit }

// Used returns the bytes the connections hold now.
func (b *Budget) Used() int64 { return b.used.Load() }

// Evictions returns how many connections were closed to stay within the
// budget.
func (b *Budget) Evictions() uint64 { return b.evictions.Load() }

// allowsCompression reports whether new connections may negotiate
// permessage-deflate.
func (b *Budget) allowsCompression() bool { return b == nil || b.used.Load() <= b.limit/2 }

// charge adds n bytes (negative to give back) to what c holds. It never
// blocks and may run under c.mu; the reclaim it may call for runs later,
// from budgetCheck, outside any connection's lock.
func (c *Conn) charge(n int64) {
	b := c.budget
	if b == nil || n == 0 {
		return
	}
	var old int64
	for {
		old = c.held.Load()
		if old < 0 {
			return // finished: everything was given back
		}
		if c.held.CompareAndSwap(old, old+n) {
			break
		}
	}
	if b.used.Add(n) > b.limit {
		b.over.Store(true)
	}
	if (old < heavyBytes) != (old+n < heavyBytes) {
		b.mu.Lock()
		if h := c.held.Load(); h >= heavyBytes {
			if _, ok := b.heavy[c]; !ok {
				b.heavy[c] = false
			}
		} else if evicted := b.heavy[c]; !evicted {
			delete(b.heavy, c)
		}
		b.mu.Unlock()
	}
}

// budgetRelease gives back everything c holds; later charges are ignored.
func (c *Conn) budgetRelease() {
	b := c.budget
	if b == nil {
		return
	}
	n := c.held.Swap(-1)
	if n > 0 {
		b.used.Add(-n)
	}
	b.mu.Lock()
	delete(b.heavy, c)
	b.mu.Unlock()
}

// budgetCheck runs a reclaim when the budget went over its limit. It is
// called where the caller holds no connection lock.
func (c *Conn) budgetCheck() {
	if b := c.budget; b != nil && b.over.Load() {
		b.reclaim()
	}
}

// reclaim closes the heaviest connections until what the others hold is
// back under 90% of the limit. Connections already being closed count as
// freed.
func (b *Budget) reclaim() {
	if !b.busy.CompareAndSwap(false, true) {
		return
	}
	defer b.busy.Store(false)
	b.over.Store(false)
	used := b.used.Load()
	if used <= b.limit {
		return
	}
	type cand struct {
		c    *Conn
		held int64
	}
	b.mu.Lock()
	var cands []cand
	for c, evicted := range b.heavy {
		h := c.held.Load()
		if evicted {
			used -= h // on its way out
			continue
		}
		cands = append(cands, cand{c, h})
	}
	target := b.limit / 10 * 9
	slices.SortFunc(cands, func(x, y cand) int {
		switch {
		case x.held > y.held:
			return -1
		case x.held < y.held:
			return 1
		}
		return 0
	})
	var victims []*Conn
	for _, v := range cands {
		if used <= target {
			break
		}
		used -= v.held
		b.heavy[v.c] = true
		victims = append(victims, v.c)
	}
	b.mu.Unlock()
	for _, c := range victims {
		b.evictions.Add(1)
		c.mu.Lock()
		code, reason := StatusMessageTooBig, "message too big for the memory budget"
		if int64(c.q.qBytes)*2 >= c.held.Load() {
			code, reason = StatusPolicyViolation, "send queue over the memory budget"
		}
		c.evictLocked(code, reason, fmt.Errorf("%w: the connections held %d bytes, over the limit of %d", ErrMemoryBudget, b.used.Load(), b.limit))
		c.mu.Unlock()
	}
}
