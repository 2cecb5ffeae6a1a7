//go:build !linux

package wsgate

import "net"

// fastListener exists only where event loops do.
type fastListener struct{}

// listenFast reports that no event loop serves listeners here: net/http
// serves everything.
func (s *Server) listenFast(net.Listener, *chanListener) (*fastListener, error) { return nil, nil }

func (s *Server) stopFast() {}

func (l *loop) handshaking() bool { return false }
