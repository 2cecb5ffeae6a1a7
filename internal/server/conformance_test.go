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
			// The standard suites send messages of up to 16 MiB: run as
			// docs/conformance.md says to, with -max-message-size 16 MiB.
			ts := startServer(t, Config{Heartbeat: -1, Compression: compression, MaxMessageSize: 16 << 20})
			conformance.Run(t, conformance.Config{
				URL:            ts.wsURL(),
				MaxMessageSize: 16 << 20,
				Compression:    compression,
			})
		})
	}
}
