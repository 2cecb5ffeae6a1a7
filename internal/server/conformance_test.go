package server

import (
	"testing"

	"github.com/wsgate/wsgate/internal/conformance"
)

// TestConformance runs our RFC 6455 / RFC 7692 suite against /ws as the
// wsgate command serves it (heartbeat off, so the endpoint only echoes),
// without and with permessage-deflate.
func TestConformance(t *testing.T) {
	for _, compression := range []bool{false, true} {
		name := "plain"
		if compression {
			name = "compression"
		}
		t.Run(name, func(t *testing.T) {
			ts := startServer(t, Config{Heartbeat: -1, Compression: compression})
			conformance.Run(t, conformance.Config{
				URL:            ts.wsURL(),
				MaxMessageSize: DefaultMaxMessageSize,
				Compression:    compression,
			})
		})
	}
}
