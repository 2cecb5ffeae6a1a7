package loadtest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/wsgate/wsgate"
)

// latencies records round trips in nanoseconds. Recording may happen on
// several event loops at once, so the histogram is split into shards, each
// with its own lock; a connection always uses the same shard.
type latencies struct {
	shards []latencyShard
}

type latencyShard struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
	_  [40]byte // keep shards on separate cache lines
}

const maxLatency = int64(time.Minute)

func newLatencies() *latencies {
	n := runtime.GOMAXPROCS(0) * 2
	l := &latencies{shards: make([]latencyShard, n)}
	for i := range l.shards {
		l.shards[i].h = hdrhistogram.New(1, maxLatency, 3)
	}
	return l
}

func (l *latencies) shard(id int) *latencyShard { return &l.shards[id%len(l.shards)] }

func (s *latencyShard) record(d int64) {
	if d < 1 {
		d = 1
	}
	if d > maxLatency {
		d = maxLatency
	}
	s.mu.Lock()
	s.h.RecordValue(d)
	s.mu.Unlock()
}

// merged returns one histogram holding every shard's values.
func (l *latencies) merged() *hdrhistogram.Histogram {
	all := hdrhistogram.New(1, maxLatency, 3)
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		all.Merge(s.h)
		s.mu.Unlock()
	}
	return all
}

// errorCounter counts errors by kind and keeps the first message of each.
type errorCounter struct {
	mu    sync.Mutex
	kinds map[string]*ErrorKind
	total uint64
}

func newErrorCounter() *errorCounter {
	return &errorCounter{kinds: make(map[string]*ErrorKind)}
}

func (e *errorCounter) add(kind string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.total++
	k := e.kinds[kind]
	if k == nil {
		k = &ErrorKind{Kind: kind}
		if err != nil {
			k.Example = err.Error()
		}
		e.kinds[kind] = k
	}
	k.Count++
}

func (e *errorCounter) count() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.total
}

// list returns the kinds, most frequent first.
func (e *errorCounter) list() []ErrorKind {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]ErrorKind, 0, len(e.kinds))
	for _, k := range e.kinds {
		out = append(out, *k)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Kind < out[j].Kind
	})
	return out
}

// dialErrorKind names the reason a dial or handshake failed.
func dialErrorKind(err error) string {
	var he *wsgate.HandshakeError
	switch {
	case errors.As(err, &he):
		if he.StatusCode != 0 {
			return fmt.Sprintf("handshake: HTTP %d", he.StatusCode)
		}
		return "handshake: " + he.Reason
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "dial: out of file descriptors (EMFILE)"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return "dial: no free source port (EADDRNOTAVAIL)"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "dial: connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "dial: connection reset"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "dial: timeout"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "dial: timeout"
	}
	return "dial: other"
}

// closeErrorKind names the reason a connection ended unexpectedly.
func closeErrorKind(err error) string {
	var ce *wsgate.CloseError
	if !errors.As(err, &ce) {
		return "closed: unknown"
	}
	switch {
	case ce.Code == wsgate.StatusAbnormalClosure:
		return "closed: connection lost (1006)"
	case ce.Remote:
		return fmt.Sprintf("closed by server: %d", int(ce.Code))
	default:
		return fmt.Sprintf("closed by client: %d", int(ce.Code))
	}
}

// Payload layout. Every message starts with a marker, the connection's
// sequence number and the send time (nanoseconds since the run began);
// text messages carry them as hexadecimal so they stay valid UTF-8. The
// rest is filler.
const (
	marker0, marker1 = 'w', 'b'
	binHeader        = 2 + 4 + 8
	textHeader       = 2 + 8 + 16
)

func minPayload(binary bool) int {
	if binary {
		return binHeader
	}
	return textHeader
}

// newPayload returns a message buffer of size bytes with its filler set.
func newPayload(size int) []byte {
	p := make([]byte, size)
	for i := range p {
		p[i] = 'a' + byte(i%26)
	}
	return p
}

const hexDigits = "0123456789abcdef"

// stamp writes the marker, seq and ts at the start of p.
func stamp(p []byte, bin bool, seq uint32, ts int64) {
	p[0], p[1] = marker0, marker1
	if bin {
		binary.BigEndian.PutUint32(p[2:], seq)
		binary.BigEndian.PutUint64(p[6:], uint64(ts))
		return
	}
	putHex(p[2:10], uint64(seq))
	putHex(p[10:26], uint64(ts))
}

func putHex(dst []byte, v uint64) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = hexDigits[v&0xF]
		v >>= 4
	}
}

func getHex(src []byte) (uint64, bool) {
	var v uint64
	for _, b := range src {
		var d byte
		switch {
		case b >= '0' && b <= '9':
			d = b - '0'
		case b >= 'a' && b <= 'f':
			d = b - 'a' + 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(d)
	}
	return v, true
}

// unstamp reads back what stamp wrote; ok is false for anything that is
// not one of our messages of the expected size.
func unstamp(p []byte, bin bool, size int) (seq uint32, ts int64, ok bool) {
	if len(p) != size || len(p) < 2 || p[0] != marker0 || p[1] != marker1 {
		return 0, 0, false
	}
	if bin {
		return binary.BigEndian.Uint32(p[2:]), int64(binary.BigEndian.Uint64(p[6:])), true
	}
	s, ok1 := getHex(p[2:10])
	t, ok2 := getHex(p[10:26])
	return uint32(s), int64(t), ok1 && ok2
}
