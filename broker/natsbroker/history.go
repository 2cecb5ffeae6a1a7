package natsbroker

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/broker"
)

// maxMetaAttempts bounds the compare-and-set retries of History and
// RemoveHistory.
const maxMetaAttempts = 20

// History returns publications of ch's stream selected by opts and the
// stream's position. The position is read from the stream leader, so it
// includes every acknowledged publication. A channel without a live stream
// gets one: offset 0 under a new epoch, kept for opts.MetaTTL (or
// Options.HistoryMetaTTL).
func (b *Broker) History(ctx context.Context, ch string, opts broker.HistoryOptions) ([]*broker.Publication, broker.StreamPosition, error) {
	if err := b.ready(); err != nil {
		return nil, broker.StreamPosition{}, err
	}
	tok, err := subjectToken(ch)
	if err != nil {
		return nil, broker.StreamPosition{}, err
	}
	if opts.MetaTTL < 0 || opts.Limit < -1 {
		return nil, broker.StreamPosition{}, fmt.Errorf("natsbroker: invalid HistoryOptions (Limit %d, MetaTTL %v)", opts.Limit, opts.MetaTTL)
	}
	top, err := b.liveTop(ctx, ch, tok, opts.MetaTTL)
	if err != nil {
		return nil, broker.StreamPosition{}, err
	}
	pubs, err := b.readPubs(ctx, tok, top, opts)
	if err != nil {
		return nil, broker.StreamPosition{}, err
	}
	return pubs, top.position(), nil
}

// liveTop returns ch's stream state, creating the stream when there is
// none and renewing its meta TTL to at least metaTTL when positive.
func (b *Broker) liveTop(ctx context.Context, ch, tok string, metaTTL time.Duration) (streamTop, error) {
	for range maxMetaAttempts {
		top, err := b.readTop(ctx, tok)
		if err != nil {
			return streamTop{}, err
		}
		now := time.Now()
		switch {
		case top.epoch == "":
			ttl := metaTTL
			if ttl == 0 {
				ttl = b.opts.HistoryMetaTTL
			}
			fresh := streamTop{epoch: newEpoch(), expires: now.Add(ttl)}
			ok, err := b.writeMeta(ctx, tok, top.seq, fresh, ttl, true)
			if err != nil {
				return streamTop{}, err
			}
			if ok {
				b.pubs.forget(ch)
				return fresh, nil
			}
			// Another node created or published first: read again.
		case metaTTL > 0 && top.expires.Sub(now) < metaTTL:
			// Renew for half as long again, so that the reads of a quiet
			// channel write at most once per half meta TTL, not every time.
			renew := metaTTL + metaTTL/2
			ok, err := b.writeMeta(ctx, tok, top.seq, top, renew, false)
			if err != nil {
				return streamTop{}, err
			}
			if ok {
				b.pubs.forget(ch)
				top.expires = now.Add(renew)
			}
			// When the write lost a race, a publication renewed the stream.
			return top, nil
		default:
			return top, nil
		}
	}
	return streamTop{}, unavailable(fmt.Errorf("reading the stream of %q: too much contention", ch))
}

// writeMeta writes a stream marker (no publication) at top's epoch and
// offset, expecting the subject's last sequence to be seq. With rollup it
// also deletes every earlier message of the subject. It reports false when
// another write came first.
func (b *Broker) writeMeta(ctx context.Context, tok string, seq uint64, top streamTop, ttl time.Duration, rollup bool) (bool, error) {
	msg := nats.NewMsg(b.historySubject(tok))
	msg.Header.Set(hdrKind, kindMeta)
	msg.Header.Set(hdrEpoch, top.epoch)
	msg.Header.Set(hdrOffset, strconv.FormatUint(top.offset, 10))
	msg.Header.Set(hdrHistory, formatHistoryHeader(top.size, top.ttl))
	msg.Header.Set(hdrExpectSubSeq, strconv.FormatUint(seq, 10))
	msg.Header.Set(hdrTTL, ttlHeader(ttl))
	if rollup {
		msg.Header.Set(hdrRollup, "sub")
	}
	_, err := b.jsPublish(ctx, msg)
	switch {
	case err == nil:
		return true, nil
	case hasErrCode(err, errCodeWrongLastSeq, errCodeWrongLastSeqConst):
		return false, nil
	}
	return false, err
}

// RemoveHistory deletes ch's publications and keeps its epoch and offset:
// one marker message replaces (rolls up) everything on the channel's
// subject, and lives as long as the stream would have.
func (b *Broker) RemoveHistory(ctx context.Context, ch string) error {
	if err := b.ready(); err != nil {
		return err
	}
	tok, err := subjectToken(ch)
	if err != nil {
		return err
	}
	for range maxMetaAttempts {
		top, err := b.readTop(ctx, tok)
		if err != nil {
			return err
		}
		if top.epoch == "" {
			return nil // no live stream: nothing to remove
		}
		ok, err := b.writeMeta(ctx, tok, top.seq, top, time.Until(top.expires), true)
		if err != nil {
			return err
		}
		if ok {
			b.pubs.forget(ch)
			return nil
		}
	}
	return unavailable(fmt.Errorf("removing the history of %q: too much contention", ch))
}

// readPubs returns the publications of top's stream that opts selects and
// that are still visible: within the last HistorySize offsets and younger
// than their HistoryTTL. Since selects the publications after it, or with
// Reverse those before it.
func (b *Broker) readPubs(ctx context.Context, tok string, top streamTop, opts broker.HistoryOptions) ([]*broker.Publication, error) {
	if opts.Limit == 0 || top.offset == 0 {
		return nil, nil
	}
	lo, hi := uint64(1), top.offset
	if opts.Since != nil && opts.Since.Epoch == top.epoch {
		if opts.Reverse {
			// Before Since, newest first: Centrifugo's backward paging.
			if opts.Since.Offset == 0 {
				return nil, nil
			}
			hi = min(hi, opts.Since.Offset-1)
		} else {
			lo = opts.Since.Offset + 1
		}
	}
	if top.size > 0 && top.offset > uint64(top.size) {
		lo = max(lo, top.offset-uint64(top.size)+1)
	}
	if lo > hi {
		return nil, nil
	}
	msgs, err := b.readSubject(ctx, tok, top)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var pubs []*broker.Publication
	for _, m := range msgs {
		if m.Header.Get(hdrKind) != kindPub || m.Header.Get(hdrEpoch) != top.epoch {
			continue
		}
		off, err := strconv.ParseUint(m.Header.Get(hdrOffset), 10, 64)
		if err != nil || off < lo || off > hi {
			continue
		}
		if _, ttl := parseHistoryHeader(m.Header.Get(hdrHistory)); ttl > 0 && !now.Before(m.Time.Add(ttl)) {
			continue // expired, not yet removed
		}
		pub, err := decodePublication(m.Data)
		if err != nil {
			b.opts.Logger.Warn("natsbroker: skipping an unreadable publication", "subject", m.Subject, "seq", m.Seq, "error", err)
			continue
		}
		pub.Offset = off
		pubs = append(pubs, pub)
	}
	if opts.Reverse {
		slices.Reverse(pubs)
	}
	if opts.Limit > 0 && len(pubs) > opts.Limit {
		pubs = pubs[:opts.Limit]
	}
	return pubs, nil
}

// historyReadBatch is how many messages one direct read asks for.
const historyReadBatch = 256

// readSubject returns the messages of a channel's history subject up to
// top.seq, oldest first. Most are read with batched direct gets, which any
// replica answers; whatever a lagging replica does not have yet is read
// from the leader, one message at a time, so the result is complete up to
// top.seq.
func (b *Broker) readSubject(ctx context.Context, tok string, top streamTop) ([]*storedMsg, error) {
	subject := b.historySubject(tok)
	var (
		out   []*storedMsg
		next  uint64
		start *time.Time
	)
	if top.ttl > 0 {
		// Older messages are invisible anyway.
		t := time.Now().Add(-top.ttl - time.Second)
		start = &t
	}
	start0 := start
	for {
		batch, more, err := b.directBatch(ctx, b.historyStream, subject, next, start, historyReadBatch)
		if err != nil {
			return nil, err
		}
		start = nil
		for _, m := range batch {
			if m.Seq > top.seq {
				return out, nil
			}
			out = append(out, m)
			next = m.Seq + 1
		}
		if len(out) > 0 && out[len(out)-1].Seq == top.seq {
			return out, nil
		}
		if !more || len(batch) == 0 {
			break
		}
	}
	// The replica that answered lags: read the rest from the leader.
	for {
		req := msgGetRequest{Seq: next, NextFor: subject}
		if next == 0 {
			req.Seq, req.StartTime = 1, start0
			if start0 != nil {
				req.Seq = 0
			}
		}
		m, err := b.leaderGet(ctx, b.historyStream, req)
		if err != nil {
			return nil, err
		}
		if m == nil || m.Seq > top.seq {
			return out, nil
		}
		out = append(out, m)
		if m.Seq == top.seq {
			return out, nil
		}
		next = m.Seq + 1
	}
}
