package natsbroker

import (
	"testing"

	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/broker/brokertest"
)

// The suite against one NATS server with three brokers on it: three
// wsgate nodes sharing one server.
func TestConformanceSingleServer(t *testing.T) {
	t.Parallel()
	ts := startTestServer(t, EmbeddedOptions{})
	brokertest.Run(t, func(t *testing.T) brokertest.Setup {
		var nodes []broker.Broker
		for range 3 {
			nodes = append(nodes, newTestBroker(t, Options{URLs: ts.url}))
		}
		return brokertest.Setup{Brokers: nodes, PresenceTTL: testPresenceTTL, Grace: testGrace}
	})
}

// The suite against a cluster of three embedded NATS servers, streams
// replicated three times, one broker on each server connected in process:
// three wsgate nodes run with an embedded cluster.
func TestConformanceCluster(t *testing.T) {
	t.Parallel()
	servers := startTestCluster(t, 3)
	brokertest.Run(t, func(t *testing.T) brokertest.Setup {
		var nodes []broker.Broker
		for _, ts := range servers {
			nodes = append(nodes, newTestBroker(t, Options{InProcess: ts.e, Replicas: 3}))
		}
		return brokertest.Setup{Brokers: nodes, PresenceTTL: testPresenceTTL, Grace: testGrace}
	})
}
