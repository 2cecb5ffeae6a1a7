package natsbroker

import (
	"testing"
	"time"

	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/broker/brokertest"
)

// The suite against one NATS server with three brokers on it: three
// wsgate nodes sharing one server.
func TestConformanceSingleServer(t *testing.T) {
	ts := startTestServer(t, EmbeddedOptions{})
	brokertest.Run(t, func(t *testing.T) brokertest.Setup {
		var nodes []broker.Broker
		for range 3 {
			nodes = append(nodes, newTestBroker(t, Options{URLs: ts.url}))
		}
		return brokertest.Setup{Brokers: nodes, PresenceTTL: 3 * time.Second}
	})
}

// The suite against a cluster of three NATS servers, streams replicated
// three times, one broker on each server.
func TestConformanceCluster(t *testing.T) {
	servers := startTestCluster(t, 3)
	brokertest.Run(t, func(t *testing.T) brokertest.Setup {
		var nodes []broker.Broker
		for _, ts := range servers {
			nodes = append(nodes, newTestBroker(t, Options{URLs: ts.url, Replicas: 3}))
		}
		return brokertest.Setup{Brokers: nodes, PresenceTTL: 3 * time.Second}
	})
}
