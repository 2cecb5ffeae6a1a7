package natsbroker

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/broker"
)

// Presence lives in the presence stream, one subject per channel and
// client (<prefix>.p.<channel>.<client>) that keeps only its last message.
// AddPresence writes the entry with a Nats-TTL of PresenceTTL, so entries
// that nobody refreshes — those of a node that died — are removed by
// JetStream itself; reads also skip entries past their TTL that the server
// has not removed yet. Reads are direct gets that any replica answers, so
// an entry written on one node may take a moment to show on another.

// AddPresence adds or refreshes a client's presence entry in ch.
func (b *Broker) AddPresence(ctx context.Context, ch string, info *broker.ClientInfo) error {
	if err := b.ready(); err != nil {
		return err
	}
	if info == nil {
		return errors.New("natsbroker: nil ClientInfo")
	}
	subject, err := b.presenceSubject(ch, info.ClientID)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(subject)
	msg.Header.Set(hdrTTL, ttlHeader(b.opts.PresenceTTL))
	msg.Data = encodeInfo(nil, info)
	_, err = b.jsPublish(ctx, msg)
	return err
}

// RemovePresence removes a client's presence entry from ch.
func (b *Broker) RemovePresence(ctx context.Context, ch string, clientID, userID string) error {
	if err := b.ready(); err != nil {
		return err
	}
	subject, err := b.presenceSubject(ch, clientID)
	if err != nil {
		return err
	}
	return b.purge(ctx, b.presenceStream, subject, 0)
}

// Presence returns ch's presence entries by client ID.
func (b *Broker) Presence(ctx context.Context, ch string) (map[string]*broker.ClientInfo, error) {
	out := make(map[string]*broker.ClientInfo)
	err := b.eachPresence(ctx, ch, func(info *broker.ClientInfo) { out[info.ClientID] = info })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// PresenceStats counts ch's clients and distinct users.
func (b *Broker) PresenceStats(ctx context.Context, ch string) (broker.PresenceStats, error) {
	clients := 0
	users := make(map[string]struct{})
	err := b.eachPresence(ctx, ch, func(info *broker.ClientInfo) {
		clients++
		users[info.UserID] = struct{}{}
	})
	if err != nil {
		return broker.PresenceStats{}, err
	}
	return broker.PresenceStats{NumClients: clients, NumUsers: len(users)}, nil
}

func (b *Broker) presenceSubject(ch, clientID string) (string, error) {
	tok, err := subjectToken(ch)
	if err != nil {
		return "", err
	}
	client, err := subjectToken(clientID)
	if err != nil {
		return "", err
	}
	return b.presencePrefix(tok) + client, nil
}

// presenceReadBatch is how many entries one direct read asks for.
const presenceReadBatch = 1000

// eachPresence calls f for each live entry of ch.
func (b *Broker) eachPresence(ctx context.Context, ch string, f func(*broker.ClientInfo)) error {
	if err := b.ready(); err != nil {
		return err
	}
	tok, err := subjectToken(ch)
	if err != nil {
		return err
	}
	filter := b.presencePrefix(tok) + "*"
	now := time.Now()
	var next uint64 = 1
	for {
		batch, more, err := b.directBatch(ctx, b.presenceStream, filter, next, nil, presenceReadBatch)
		if err != nil {
			return err
		}
		for _, m := range batch {
			next = m.Seq + 1
			if ttl := storedTTL(m.Header); ttl > 0 && !now.Before(m.Time.Add(ttl)) {
				continue
			}
			info, err := decodeInfo(m.Data)
			if err != nil {
				b.opts.Logger.Warn("natsbroker: skipping an unreadable presence entry", "subject", m.Subject, "error", err)
				continue
			}
			f(info)
		}
		if !more || len(batch) == 0 {
			return nil
		}
	}
}
