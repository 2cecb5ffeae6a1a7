//go:build !linux

package wsgate

import "net"

// Without epoll every connection uses a reader goroutine.

type loop struct{ stats loopCounters }

func (l *loop) post(task)                      {}
func startLoops() ([]*loop, error)             { return nil, nil }
func dupFD(net.Conn) (int, bool, error)        { return -1, false, nil }
func closeFD(int)                              {}
func writev2(int, []byte, []byte) (int, error) { return 0, nil }
func (c *Conn) flushFDLocked() (int, error)    { return 0, nil }
func shutdownWrite(int)                        {}
func (l *loop) counters() *loopCounters        { return &l.stats }
