//go:build !linux

package wsgate

import "net"

// Without epoll every connection uses a reader goroutine.

type loop struct{}

func (l *loop) post(task)                      {}
func startLoops() []*loop                      { return nil }
func takeFD(net.Conn) (int, bool)              { return -1, false }
func writev2(int, []byte, []byte) (int, error) { return 0, nil }
func (c *Conn) flushFDLocked()                 {}
func shutdownWrite(int)                        {}
