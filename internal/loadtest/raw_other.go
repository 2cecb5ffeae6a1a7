//go:build !linux

package loadtest

import (
	"context"
	"fmt"
	"net"
)

func runRaw(context.Context, *Config, *Report) error {
	return fmt.Errorf("%w: -raw needs Linux (epoll)", ErrUsage)
}

// peerClosed cannot look at a socket without reading it here; it reports
// every connection alive.
func peerClosed(net.Conn) bool { return false }
