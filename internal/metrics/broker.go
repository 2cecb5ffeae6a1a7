package metrics

import (
	"context"
	"sync/atomic"

	"github.com/wsgate/wsgate/broker"
)

// BrokerCounters counts what passes through a broker wrapped by
// CountBroker. Its methods are safe for concurrent use.
type BrokerCounters struct {
	received      atomic.Uint64
	publishErrors atomic.Uint64
	gaps          atomic.Uint64
}

// Received returns the publications the broker delivered to this node.
func (n *BrokerCounters) Received() uint64 { return n.received.Load() }

// PublishErrors returns the Publish calls that failed.
func (n *BrokerCounters) PublishErrors() uint64 { return n.publishErrors.Load() }

// Gaps returns the times the broker reported possibly lost deliveries.
func (n *BrokerCounters) Gaps() uint64 { return n.gaps.Load() }

// CountBroker returns b wrapped so that its deliveries, failed publishes
// and reported gaps are counted, and the counters. The wrapper keeps b's
// optional capabilities: it is a broker.PresenceManager exactly when b is
// one (so that the hub keeps using b for presence), a broker.NodeDirectory
// exactly when b is one (so that the hub announces the node), and it is a
// broker.Closer and a broker.HealthChecker that pass the call on to b, or
// do nothing when b lacks it. It adds an atomic increment per delivered
// publication (not per subscriber) and nothing else.
func CountBroker(b broker.Broker) (broker.Broker, *BrokerCounters) {
	n := &BrokerCounters{}
	cb := &countingBroker{Broker: b, n: n}
	pm, isPM := b.(broker.PresenceManager)
	nd, isND := b.(broker.NodeDirectory)
	switch {
	case isPM && isND:
		return &countingPresenceNodeBroker{countingBroker: cb, PresenceManager: pm, NodeDirectory: nd}, n
	case isPM:
		return &countingPresenceBroker{countingBroker: cb, PresenceManager: pm}, n
	case isND:
		return &countingNodeBroker{countingBroker: cb, NodeDirectory: nd}, n
	}
	return cb, n
}

type countingBroker struct {
	broker.Broker
	n *BrokerCounters
}

type countingPresenceBroker struct {
	*countingBroker
	broker.PresenceManager
}

type countingNodeBroker struct {
	*countingBroker
	broker.NodeDirectory
}

type countingPresenceNodeBroker struct {
	*countingBroker
	broker.PresenceManager
	broker.NodeDirectory
}

var (
	_ broker.Broker          = (*countingBroker)(nil)
	_ broker.Closer          = (*countingBroker)(nil)
	_ broker.HealthChecker   = (*countingBroker)(nil)
	_ broker.PresenceManager = (*countingPresenceBroker)(nil)
	_ broker.NodeDirectory   = (*countingNodeBroker)(nil)
	_ broker.PresenceManager = (*countingPresenceNodeBroker)(nil)
	_ broker.NodeDirectory   = (*countingPresenceNodeBroker)(nil)
)

func (b *countingBroker) Run(ctx context.Context, h broker.EventHandler) error {
	return b.Broker.Run(ctx, &countingHandler{EventHandler: h, n: b.n})
}

func (b *countingBroker) Publish(ctx context.Context, ch string, data []byte, opts broker.PublishOptions) (broker.StreamPosition, error) {
	sp, err := b.Broker.Publish(ctx, ch, data, opts)
	if err != nil {
		b.n.publishErrors.Add(1)
	}
	return sp, err
}

func (b *countingBroker) Close(ctx context.Context) error {
	if c, ok := b.Broker.(broker.Closer); ok {
		return c.Close(ctx)
	}
	return nil
}

func (b *countingBroker) Healthy() error {
	if hc, ok := b.Broker.(broker.HealthChecker); ok {
		return hc.Healthy()
	}
	return nil
}

type countingHandler struct {
	broker.EventHandler
	n *BrokerCounters
}

func (h *countingHandler) HandlePublication(ch string, pub *broker.Publication, sp broker.StreamPosition) {
	h.n.received.Add(1)
	h.EventHandler.HandlePublication(ch, pub, sp)
}

func (h *countingHandler) HandleGap(channels []string) {
	h.n.gaps.Add(1)
	h.EventHandler.HandleGap(channels)
}
