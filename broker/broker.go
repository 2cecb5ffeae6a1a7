// Package broker defines what the hub needs from a publish/subscribe
// engine: channel streams with offsets, epochs and bounded history, fan-out
// of publications to every node that listens, and presence. Memory is the
// single-node implementation; the natsbroker package runs the same
// contract on NATS JetStream for clusters.
//
// Offsets and ordering belong to the broker, never to the hub: a channel's
// offsets grow by exactly one per publication whichever node published, so
// a subscriber that knows its last offset and the stream's epoch can always
// tell whether it missed something.
//
// Every implementation must pass the conformance suite in package
// brokertest.
package broker

import (
	"context"
	"errors"
	"time"
)

// ClientInfo describes a connection to the others in a channel: the
// publisher of a publication, a presence entry, a join or a leave.
type ClientInfo struct {
	ClientID string // unique per connection
	UserID   string // "" for anonymous connections
	ConnInfo []byte // connection-level info (JSON), from the connection token
	ChanInfo []byte // channel-level info (JSON), from the subscription token
}

// Publication is one message in a channel's stream.
type Publication struct {
	// Offset is the publication's position in the channel's stream: the
	// first publication of an epoch has offset 1 and each next one the
	// previous plus one. Zero when the channel keeps no history.
	Offset uint64
	// Data is the payload as published. The hub never modifies it; for the
	// JSON client protocol it is a JSON value.
	Data []byte
	// Info is the publisher, when a client published and the channel
	// reveals it; nil otherwise.
	Info *ClientInfo
	// Tags are optional key-values delivered with the publication.
	Tags map[string]string
	// Time is when the broker accepted the publication, in Unix
	// milliseconds.
	Time int64
}

// StreamPosition is a position in a channel's stream.
type StreamPosition struct {
	// Offset of the last publication in the stream (0 for an empty one).
	Offset uint64
	// Epoch identifies one life of the stream. When a stream is lost (its
	// history expired or was removed, or the storage was reset) it starts
	// again at offset 1 under a new epoch, so that a position taken in the
	// old stream can never be mistaken for one in the new.
	Epoch string
}

// PublishOptions alter a publication.
type PublishOptions struct {
	// HistorySize is how many publications the channel's stream keeps.
	// Zero means the channel keeps no history: the publication is fanned
	// out without an offset and cannot be recovered.
	HistorySize int
	// HistoryTTL is how long publications stay in the stream; the stream
	// itself (its epoch and offsets) lives at least HistoryMetaTTL more
	// after the last publication. Required when HistorySize > 0.
	HistoryTTL time.Duration
	// HistoryMetaTTL is how long a stream's epoch and offset outlive the
	// last publication. Zero means the broker's default (at least 24h).
	HistoryMetaTTL time.Duration
	// ClientInfo is the publisher, copied to Publication.Info.
	ClientInfo *ClientInfo
	// Tags are copied to Publication.Tags.
	Tags map[string]string
	// IdempotencyKey, when set, makes the publication idempotent: a second
	// Publish with the same key on the same channel within
	// IdempotentResultTTL publishes nothing and returns the first one's
	// position.
	IdempotencyKey string
	// IdempotentResultTTL bounds how long an IdempotencyKey is remembered
	// at least (a broker may remember it longer). Zero means 5 minutes.
	IdempotentResultTTL time.Duration
}

// HistoryOptions select publications from a channel's stream.
type HistoryOptions struct {
	// Since, when set, selects the publications after Since.Offset, oldest
	// first; with Reverse, the publications before Since.Offset, newest
	// first (as Centrifugo pages history backwards). When Since.Epoch
	// differs from the stream's current epoch the publications of the
	// current epoch are returned as if Since were nil; callers compare
	// epochs to detect it.
	Since *StreamPosition
	// Limit bounds the number of publications returned: -1 means all of
	// them, 0 means none (only the stream's position).
	Limit int
	// Reverse returns newest first.
	Reverse bool
	// MetaTTL, when positive, extends the stream's meta TTL as a publish
	// would. Zero leaves it as it is.
	MetaTTL time.Duration
}

// PresenceStats summarizes a channel's presence.
type PresenceStats struct {
	NumClients int // connections present
	NumUsers   int // distinct user IDs among them ("" counts as one user)
}

// EventHandler receives what a broker delivers for the channels this node
// subscribed to. The hub implements it.
//
// For one channel, calls are never concurrent and publications arrive in
// offset order; different channels may be delivered concurrently. A broker
// that may have lost deliveries (a reconnect, a dropped buffer) says so with
// HandleGap rather than staying silent, so that subscribers can recover or
// be told they cannot.
type EventHandler interface {
	// HandlePublication delivers a publication; sp is the stream position
	// it created (zero for channels without history).
	HandlePublication(ch string, pub *Publication, sp StreamPosition)
	// HandleJoin and HandleLeave deliver presence events of a channel.
	HandleJoin(ch string, info *ClientInfo)
	HandleLeave(ch string, info *ClientInfo)
	// HandleGap reports that publications of the given channels (nil
	// means every subscribed channel) may have been lost in delivery, for
	// example after a reconnection to the message bus. The hub then checks
	// its subscribers' positions against the streams.
	HandleGap(channels []string)
}

// Broker fans publications out to every node that subscribed to a channel
// and keeps each channel's stream. All methods are safe for concurrent use.
//
// Delivery is at most once per node and subscription, in offset order per
// channel; losses are reported through EventHandler.HandleGap. Publish
// returns only after the publication is stored (when the channel keeps
// history) and handed to the fan-out, so an acknowledged publication with
// history is never lost to recovery.
type Broker interface {
	// Run starts delivering to h. It is called once, before any other
	// method, and returns when the broker is ready (or failed to start).
	// Deliveries stop when ctx is done or Close (see Closer) is called.
	Run(ctx context.Context, h EventHandler) error
	// Subscribe makes this node receive ch's publications, joins and
	// leaves. Subscribe and Unsubscribe of one channel are never called
	// concurrently; callers serialize them per channel. In a cluster, other
	// nodes learn of the subscription a moment after Subscribe returns: a
	// publication without history, a join or a leave published elsewhere in
	// that moment may not be delivered; publications with history are
	// recovered or reported with HandleGap.
	Subscribe(ctx context.Context, ch string) error
	// Unsubscribe stops delivering ch to this node. A delivery already in
	// progress may still complete.
	Unsubscribe(ctx context.Context, ch string) error
	// Publish adds data to ch (and to its stream when opts.HistorySize >
	// 0) and fans it out. It returns the publication's stream position,
	// the zero value for a channel without history. An error wrapping
	// ErrUnavailable after a timeout may hide a publication that was
	// stored: publish with an IdempotencyKey to retry safely.
	Publish(ctx context.Context, ch string, data []byte, opts PublishOptions) (StreamPosition, error)
	// PublishJoin and PublishLeave fan a presence event out. They are not
	// kept in history.
	PublishJoin(ctx context.Context, ch string, info *ClientInfo) error
	PublishLeave(ctx context.Context, ch string, info *ClientInfo) error
	// History returns publications of ch's stream selected by opts, and
	// the stream's current position. A channel that never had history
	// returns no publications and a position with offset 0 and a fresh
	// epoch that stays stable until the stream is lost.
	History(ctx context.Context, ch string, opts HistoryOptions) ([]*Publication, StreamPosition, error)
	// RemoveHistory deletes ch's publications. The offset and epoch stay,
	// so positions taken before remain comparable; recovering across the
	// removal is impossible and reported as such.
	RemoveHistory(ctx context.Context, ch string) error
}

// PresenceManager keeps who is in which channel. Entries not refreshed by
// AddPresence within the manager's TTL expire, so the entries of a node
// that died disappear by themselves. In a cluster, reads may reflect
// changes made on another node a moment later.
type PresenceManager interface {
	// Presence returns ch's entries by client ID.
	Presence(ctx context.Context, ch string) (map[string]*ClientInfo, error)
	// PresenceStats counts ch's clients and distinct users.
	PresenceStats(ctx context.Context, ch string) (PresenceStats, error)
	// AddPresence adds or refreshes a client's entry.
	AddPresence(ctx context.Context, ch string, info *ClientInfo) error
	// RemovePresence removes a client's entry.
	RemovePresence(ctx context.Context, ch string, clientID, userID string) error
}

// Closer is implemented by brokers and presence managers that hold
// resources; the hub's Shutdown calls it.
type Closer interface {
	Close(ctx context.Context) error
}

// HealthChecker is implemented by brokers that depend on something that
// can fail (a message bus); the server's readiness endpoint reports it.
type HealthChecker interface {
	// Healthy returns nil when the broker can publish and deliver.
	Healthy() error
}

// StatsReporter is implemented by brokers that report figures for
// monitoring; the server exports them as metrics.
type StatsReporter interface {
	// BrokerStats returns the broker's figures now. It may ask the message
	// bus, so it takes a context and may fail.
	BrokerStats(ctx context.Context) (Stats, error)
}

// Stats are a broker's figures (see StatsReporter).
type Stats struct {
	// HistoryPublications is how many publications the broker holds in
	// history, over all channels (what History could still return, and
	// for a message bus also what it keeps until expiry).
	HistoryPublications uint64
	// HistoryBytes is the storage they take: payload bytes for Memory,
	// the stream's stored bytes for a message bus.
	HistoryBytes uint64
	// Reconnects is how many times the broker reconnected to its message
	// bus since it started (0 for a broker without one).
	Reconnects uint64
}

// NodeDirectory is implemented by brokers that connect several nodes: each
// node announces itself through the broker, and learns of the others (what
// Centrifugo's nodes do with their periodic node info messages). The hub
// announces its node every Config.NodeAnnounceInterval.
type NodeDirectory interface {
	// AnnounceNode tells the other nodes about this one.
	AnnounceNode(ctx context.Context, info NodeInfo) error
	// Nodes returns the nodes heard from within their announcement's TTL,
	// this one included once its own announcement has come back.
	Nodes() []NodeInfo
}

// NodeInfo is a node's announcement (see NodeDirectory).
type NodeInfo struct {
	ID      string // unique per process start
	Name    string // the operator's name for the node
	Version string

	Clients, Users, Channels, Subscriptions int
	UptimeSeconds                           int64

	// TTL is how long the announcement stands: the others forget a node
	// that has announced nothing for this long.
	TTL time.Duration
}

// ErrUnavailable means the broker cannot serve the request now (for
// example while reconnecting to its message bus); the request may be
// retried.
var ErrUnavailable = errors.New("broker: unavailable")
