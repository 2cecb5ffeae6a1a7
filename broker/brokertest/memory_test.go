package brokertest_test

import (
	"testing"
	"time"

	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/broker/brokertest"
)

// The suite against the in-memory broker, the single-node default.
func TestMemory(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) brokertest.Setup {
		m := broker.NewMemory(broker.MemoryConfig{PresenceTTL: 2 * time.Second, SweepInterval: 100 * time.Millisecond})
		return brokertest.Setup{Brokers: []broker.Broker{m}, Presence: []broker.PresenceManager{m}, PresenceTTL: 2 * time.Second}
	})
}
