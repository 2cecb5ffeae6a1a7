package wsgate

import "sync"

// recvQueue holds received messages for Read when the connection is not in
// event-driven mode.
type recvQueue struct {
	mu     sync.Mutex
	items  []inMsg
	head   int
	bytes  int
	paused bool
	notify chan struct{}
}

type inMsg struct {
	typ  MessageType
	data []byte
}

func (q *recvQueue) isPaused() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.paused
}

// push adds a message and reports whether reading must pause. The queue
// takes data over; its memory stays charged to the connection until Read
// takes it.
func (c *Conn) push(typ MessageType, data []byte) bool {
	q := c.rq
	c.charge(int64(cap(data)))
	q.mu.Lock()
	q.items = append(q.items, inMsg{typ, data})
	q.bytes += len(data)
	full := len(q.items)-q.head >= c.cfg.RecvQueueMessages || q.bytes >= c.cfg.RecvQueueBytes
	if full {
		q.paused = true
	}
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
	return full
}

func (c *Conn) pop() (inMsg, bool) {
	q := c.rq
	q.mu.Lock()
	if q.head == len(q.items) {
		q.mu.Unlock()
		return inMsg{}, false
	}
	m := q.items[q.head]
	q.items[q.head] = inMsg{}
	q.head++
	q.bytes -= len(m.data)
	more := q.head < len(q.items)
	if !more {
		q.items, q.head = q.items[:0], 0
		if cap(q.items) > 64 {
			q.items = nil
		}
	} else if q.head > 32 && q.head*2 > len(q.items) {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	resume := q.paused && len(q.items)-q.head < c.cfg.RecvQueueMessages && q.bytes < c.cfg.RecvQueueBytes
	if resume {
		q.paused = false
	}
	q.mu.Unlock()
	c.charge(-int64(cap(m.data)))
	if more {
		select {
		case q.notify <- struct{}{}:
		default:
		}
	}
	if resume {
		c.resumeReading()
	}
	return m, true
}

// resumeReading restarts a reader that paused because the queue was full.
func (c *Conn) resumeReading() {
	if c.fd >= 0 {
		c.loop.post(task{c: c, kind: taskResume})
		return
	}
	select {
	case c.nt.resume <- struct{}{}:
	default:
	}
}
