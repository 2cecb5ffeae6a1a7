//go:build !linux

package wsgate

import (
	"net"
	"testing"
)

// socketPair is only needed where event loops exist.
func socketPair(t *testing.T) (server, client net.Conn) {
	t.Skip("event loops are Linux only")
	return nil, nil
}
