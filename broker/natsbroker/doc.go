// Package natsbroker runs wsgate's broker.Broker and broker.PresenceManager
// on NATS with JetStream, so that several wsgate nodes share channels,
// history and presence: a publication made on any node reaches the
// channel's subscribers on every node, with offsets and epochs that agree
// everywhere.
//
// # Where things live
//
//   - History: one JetStream stream, <PREFIX>_HISTORY, one subject per
//     channel (<prefix>.h.<channel>), one message per publication carrying
//     its epoch and offset. Offsets are assigned by compare-and-set on the
//     subject's last sequence (Nats-Expected-Last-Subject-Sequence), so they
//     are contiguous and in stream order whichever node publishes. The last
//     message of a channel doubles as the stream's meta record: its TTL is
//     HistoryTTL+HistoryMetaTTL, and History hides publications older than
//     their HistoryTTL.
//   - Fan-out: the history stream republishes every stored message on the
//     channel's fan-out subject (<prefix>.c.<channel>), after it is stored,
//     in stream order. Publications without history, joins and leaves are
//     published there directly. A node subscribes to the fan-out subjects of
//     the channels it has local subscribers for, and to nothing else.
//   - Presence: the stream <PREFIX>_PRESENCE, one subject per channel and
//     client keeping its last message, with a per-message TTL, so the
//     entries of a node that died expire by themselves.
//
// Channel names are escaped into single subject tokens ('.', wildcards,
// spaces and non-ASCII bytes become %XX), so any channel name works.
//
// # Guarantees
//
// Publications with history are delivered to each subscribed node once and
// in offset order. A node checks every delivery against the last offset it
// delivered for the channel and fills a jump by reading the missing
// publications back from the stream; it checks again after reconnecting,
// after NATS dropped messages because the node was slow, and when a channel
// has been quiet for Options.PositionCheckInterval. What history no longer
// holds is reported with EventHandler.HandleGap, never skipped silently.
// Publish returns once JetStream stored the publication on a majority of
// Replicas, so an acknowledged publication survives the loss of a wsgate
// node and, with Replicas 3, of a NATS server.
//
// Publications without history, joins and leaves are delivered at most
// once. A subscription takes effect on the other NATS servers of a cluster
// a moment (one route hop) after Subscribe returns; what is published
// without history in that moment is not delivered to the new subscriber.
// After a reconnection the broker reports such channels with HandleGap.
//
// docs/cluster.md explains these choices and how to run a cluster.
//
// # Embedded NATS
//
// StartEmbedded runs a NATS server with JetStream inside the process; a
// Broker connects to it in process (Options.InProcess). Given a cluster
// address and the other nodes' addresses, embedded servers form a NATS
// cluster, so three wsgate processes need nothing else installed.
package natsbroker
