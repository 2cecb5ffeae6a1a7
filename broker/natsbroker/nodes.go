package natsbroker

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/broker"
)

// The node directory: each node publishes its announcement on
// <prefix>.n (core NATS, nothing stored), every node subscribes to it and
// keeps what it heard until the announcement's TTL runs out.

// maxNodes bounds the directory, so that a misbehaving publisher on the
// subject cannot make a node hold unbounded memory.
const maxNodes = 1024

// nodeWire is an announcement on the wire (JSON).
type nodeWire struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	Version       string `json:"version"`
	Clients       int    `json:"clients"`
	Users         int    `json:"users"`
	Channels      int    `json:"channels"`
	Subscriptions int    `json:"subscriptions"`
	UptimeSeconds int64  `json:"uptime"`
	TTLMillis     int64  `json:"ttl_ms"`
}

type nodeEntry struct {
	info    broker.NodeInfo
	expires time.Time
}

// nodeDirectory holds the announcements heard. Its methods are safe for
// concurrent use.
type nodeDirectory struct {
	mu    sync.Mutex
	nodes map[string]nodeEntry
}

func (b *Broker) nodeSubject() string { return b.opts.Prefix + ".n" }

// subscribeNodes starts listening to the other nodes' announcements. The
// subscription ends with the NATS connection.
func (b *Broker) subscribeNodes() error {
	_, err := b.nc.Subscribe(b.nodeSubject(), func(m *nats.Msg) {
		b.nodes.heard(m.Data, time.Now())
	})
	if err != nil {
		return fmt.Errorf("natsbroker: subscribing to node announcements: %w", err)
	}
	return nil
}

// heard records one announcement; anything that does not decode, or has
// no ID or a TTL that is not positive, is ignored.
func (d *nodeDirectory) heard(data []byte, now time.Time) {
	var w nodeWire
	if json.Unmarshal(data, &w) != nil || w.ID == "" || w.TTLMillis <= 0 {
		return
	}
	ttl := time.Duration(w.TTLMillis) * time.Millisecond
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.nodes == nil {
		d.nodes = make(map[string]nodeEntry)
	}
	if _, known := d.nodes[w.ID]; !known && len(d.nodes) >= maxNodes {
		d.pruneLocked(now)
		if len(d.nodes) >= maxNodes {
			return
		}
	}
	d.nodes[w.ID] = nodeEntry{
		info: broker.NodeInfo{
			ID: w.ID, Name: w.Name, Version: w.Version,
			Clients: w.Clients, Users: w.Users, Channels: w.Channels, Subscriptions: w.Subscriptions,
			UptimeSeconds: w.UptimeSeconds, TTL: ttl,
		},
		expires: now.Add(ttl),
	}
}

func (d *nodeDirectory) pruneLocked(now time.Time) {
	for id, e := range d.nodes {
		if !now.Before(e.expires) {
			delete(d.nodes, id)
		}
	}
}

// list returns the live announcements, by name then ID.
func (d *nodeDirectory) list(now time.Time) []broker.NodeInfo {
	d.mu.Lock()
	d.pruneLocked(now)
	out := make([]broker.NodeInfo, 0, len(d.nodes))
	for _, e := range d.nodes {
		out = append(out, e.info)
	}
	d.mu.Unlock()
	slices.SortFunc(out, func(a, b broker.NodeInfo) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// AnnounceNode publishes this node's announcement to every node (itself
// included) on core NATS. It fails while the broker is not running or
// the announcement is invalid (no ID, a TTL that is not positive).
func (b *Broker) AnnounceNode(_ context.Context, info broker.NodeInfo) error {
	if err := b.ready(); err != nil {
		return unavailable(err)
	}
	if info.ID == "" || info.TTL <= 0 {
		return fmt.Errorf("natsbroker: AnnounceNode: an ID and a positive TTL are required (ID %q, TTL %v)", info.ID, info.TTL)
	}
	data, err := json.Marshal(nodeWire{
		ID: info.ID, Name: info.Name, Version: info.Version,
		Clients: info.Clients, Users: info.Users, Channels: info.Channels, Subscriptions: info.Subscriptions,
		UptimeSeconds: info.UptimeSeconds, TTLMillis: max(info.TTL.Milliseconds(), 1),
	})
	if err != nil {
		return fmt.Errorf("natsbroker: AnnounceNode: %w", err)
	}
	if err := b.nc.Publish(b.nodeSubject(), data); err != nil {
		return transportError(err)
	}
	return nil
}

// Nodes returns the nodes whose announcement is still within its TTL,
// this one included once its own announcement has come back, sorted by
// name then ID.
func (b *Broker) Nodes() []broker.NodeInfo {
	return b.nodes.list(time.Now())
}
