package natsbroker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/wsgate/wsgate/broker"
)

// How offsets are assigned. A channel's history lives on one subject of
// the history stream, one message per publication, each carrying its
// epoch and offset. A publisher reads the subject's last message (cached
// per channel after its own publishes), writes offset+1 with
// Nats-Expected-Last-Subject-Sequence set to that message's stream
// sequence, and retries after re-reading when another node got there
// first. JetStream checks the expectation and stores the message in one
// step on the stream leader, so offsets are contiguous and stream order is
// offset order, whichever node publishes.
//
// The last message of a subject also carries the stream's meta: its
// Nats-TTL is HistoryTTL+HistoryMetaTTL, so epoch and offset outlive the
// publication's visibility (History hides publications older than their
// HistoryTTL). When it expires too, the stream is lost and the next write
// starts a new epoch at offset 1.

// maxPublishAttempts bounds the compare-and-set retries of one Publish.
const maxPublishAttempts = 100

// streamTop is the state of a channel's stream as read from its last
// message.
type streamTop struct {
	seq     uint64 // stream sequence of the last message, 0 when none
	epoch   string // "" when there is no live stream
	offset  uint64
	expires time.Time     // when the last message (and so the stream) expires
	size    int           // the history size the last message was written with
	ttl     time.Duration // and its history TTL
}

func (t streamTop) position() broker.StreamPosition {
	return broker.StreamPosition{Offset: t.offset, Epoch: t.epoch}
}

// parseHistoryHeader parses "size/ttl-ms".
func parseHistoryHeader(v string) (int, time.Duration) {
	var size, ms int64
	if _, err := fmt.Sscanf(v, "%d/%d", &size, &ms); err != nil {
		return 0, 0
	}
	return int(size), time.Duration(ms) * time.Millisecond
}

func formatHistoryHeader(size int, ttl time.Duration) string {
	return strconv.Itoa(size) + "/" + strconv.FormatInt(ttl.Milliseconds(), 10)
}

// topOf reads the stream state from a channel's last history message.
func topOf(m *storedMsg, now time.Time) streamTop {
	if m == nil {
		return streamTop{}
	}
	top := streamTop{seq: m.Seq}
	if ttl := storedTTL(m.Header); ttl > 0 {
		top.expires = m.Time.Add(ttl)
		if !now.Before(top.expires) {
			// Expired, not yet removed by the server: the stream is lost,
			// but the next write must still expect this sequence.
			return top
		}
	}
	top.epoch = m.Header.Get(hdrEpoch)
	top.offset, _ = strconv.ParseUint(m.Header.Get(hdrOffset), 10, 64)
	top.size, top.ttl = parseHistoryHeader(m.Header.Get(hdrHistory))
	if top.epoch == "" {
		return streamTop{seq: m.Seq}
	}
	return top
}

// readTop reads a channel's stream state through the stream leader.
func (b *Broker) readTop(ctx context.Context, tok string) (streamTop, error) {
	m, err := b.leaderGet(ctx, b.historyStream, msgGetRequest{LastFor: b.historySubject(tok)})
	if err != nil {
		return streamTop{}, err
	}
	return topOf(m, time.Now()), nil
}

// newEpoch returns a random epoch: 8 characters from [0-9A-Za-z].
func newEpoch() string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	out := make([]byte, 8)
	limit := big.NewInt(int64(len(alphabet)))
	for i := range out {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			panic(err) // crypto/rand does not fail on supported platforms
		}
		out[i] = alphabet[n.Int64()]
	}
	return string(out)
}

// publishers serializes this node's publishes per channel (they would only
// defeat each other's compare-and-set) and caches each channel's last
// known top, so that an uncontended publish costs one round trip.
type publishers struct {
	mu    sync.Mutex
	chans map[string]*chanPublisher
}

// maxCachedTops bounds the channels whose top stays cached between
// publishes.
const maxCachedTops = 16384

type chanPublisher struct {
	mu   sync.Mutex // held for a whole Publish
	refs int        // guarded by publishers.mu
	top  streamTop  // guarded by mu
	ok   bool       // top is known
}

func (p *publishers) init() { p.chans = make(map[string]*chanPublisher) }

func (p *publishers) acquire(ch string) *chanPublisher {
	p.mu.Lock()
	cp := p.chans[ch]
	if cp == nil {
		if len(p.chans) >= maxCachedTops {
			// Evict an idle entry; map iteration starts at random.
			for k, v := range p.chans {
				if v.refs == 0 {
					delete(p.chans, k)
					break
				}
			}
		}
		cp = &chanPublisher{}
		p.chans[ch] = cp
	}
	cp.refs++
	p.mu.Unlock()
	cp.mu.Lock()
	return cp
}

func (p *publishers) release(cp *chanPublisher) {
	cp.mu.Unlock()
	p.mu.Lock()
	cp.refs--
	p.mu.Unlock()
}

// forget drops ch's cached top, after a write that did not go through
// Publish (RemoveHistory, a meta renewal).
func (p *publishers) forget(ch string) {
	p.mu.Lock()
	if cp := p.chans[ch]; cp != nil && cp.refs == 0 {
		delete(p.chans, ch)
	}
	p.mu.Unlock()
}

// Publish adds data to ch's stream when opts.HistorySize > 0 and fans it
// out to every node subscribed to ch.
//
// With history, Publish returns after JetStream stored the publication
// (on a majority of Replicas); the stream then republishes it to the
// subscribed nodes. Without history the publication is handed to the NATS
// connection and is delivered at most once.
//
// A request that timed out may have been stored anyway: Publish looks for
// it before retrying, so it never stores one publication twice, but when
// ctx ends first the error (wrapping broker.ErrUnavailable) leaves the
// outcome unknown. Publish with an IdempotencyKey to retry safely.
func (b *Broker) Publish(ctx context.Context, ch string, data []byte, opts broker.PublishOptions) (broker.StreamPosition, error) {
	if err := b.ready(); err != nil {
		return broker.StreamPosition{}, err
	}
	tok, err := subjectToken(ch)
	if err != nil {
		return broker.StreamPosition{}, err
	}
	switch {
	case opts.HistorySize < 0:
		return broker.StreamPosition{}, fmt.Errorf("natsbroker: negative HistorySize %d", opts.HistorySize)
	case opts.HistorySize > 0 && opts.HistoryTTL <= 0:
		return broker.StreamPosition{}, errors.New("natsbroker: HistorySize needs a positive HistoryTTL")
	case opts.HistoryMetaTTL < 0 || opts.IdempotentResultTTL < 0:
		return broker.StreamPosition{}, errors.New("natsbroker: negative HistoryMetaTTL or IdempotentResultTTL")
	}
	pub := &broker.Publication{Data: data, Info: opts.ClientInfo, Tags: opts.Tags, Time: time.Now().UnixMilli()}
	body := encodePublication(nil, pub)
	if opts.HistorySize == 0 {
		return broker.StreamPosition{}, b.publishNoHistory(ctx, ch, tok, body, opts)
	}
	return b.publishHistory(ctx, ch, tok, body, opts)
}

// idempotencyKey returns the hex digest that stands for a channel's
// idempotency key in subjects and message IDs, and the key's TTL.
func idempotencyKey(ch string, opts broker.PublishOptions) (string, time.Duration) {
	ttl := opts.IdempotentResultTTL
	if ttl == 0 {
		ttl = 5 * time.Minute
	}
	sum := sha256.Sum256([]byte(ch + "\x00" + opts.IdempotencyKey))
	return hex.EncodeToString(sum[:16]), ttl
}

// widenDuplicateWindow grows the history stream's duplicate window (in
// which JetStream rejects a repeated Nats-Msg-Id) to at least d.
func (b *Broker) widenDuplicateWindow(ctx context.Context, d time.Duration) error {
	if time.Duration(b.dupWindow.Load()) >= d {
		return nil
	}
	b.dupMu.Lock()
	defer b.dupMu.Unlock()
	if time.Duration(b.dupWindow.Load()) >= d {
		return nil
	}
	reqCtx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
	defer cancel()
	s, err := b.js.Stream(reqCtx, b.historyStream)
	if err != nil {
		return transportError(err)
	}
	cfg := s.CachedInfo().Config
	if cfg.Duplicates < d {
		cfg.Duplicates = d
		if _, err := b.js.UpdateStream(reqCtx, cfg); err != nil {
			return transportError(fmt.Errorf("widening the idempotency window to %v: %w", d, err))
		}
	}
	b.dupWindow.Store(int64(max(cfg.Duplicates, d)))
	return nil
}

// publishNoHistory fans a publication out on core NATS. With an
// idempotency key it first stores a record of the key, expecting the
// key's subject to be empty, which fails for a key seen within its TTL. A
// node that dies between the record and the fan-out loses that
// publication: delivery without history is at most once.
func (b *Broker) publishNoHistory(ctx context.Context, ch, tok string, body []byte, opts broker.PublishOptions) error {
	if opts.IdempotencyKey != "" {
		key, ttl := idempotencyKey(ch, opts)
		rec := nats.NewMsg(b.idemSubject(tok, key))
		rec.Header.Set(hdrExpectSubSeq, "0")
		rec.Header.Set(hdrTTL, ttlHeader(ttl))
		_, err := b.jsPublish(ctx, rec)
		switch {
		case hasErrCode(err, errCodeWrongLastSeq, errCodeWrongLastSeqConst):
			return nil // published before
		case err != nil:
			return err
		}
	}
	msg := nats.NewMsg(b.fanoutSubject(tok))
	msg.Header.Set(hdrKind, kindPub)
	msg.Data = body
	if err := b.nc.PublishMsg(msg); err != nil {
		return transportError(err)
	}
	return nil
}

// idemRecord is what a record of an idempotency key holds for a channel
// with history: the position of the first publication.
func parseIdemRecord(m *storedMsg, now time.Time) (broker.StreamPosition, bool) {
	if m == nil {
		return broker.StreamPosition{}, false
	}
	if ttl := storedTTL(m.Header); ttl > 0 && !now.Before(m.Time.Add(ttl)) {
		return broker.StreamPosition{}, false
	}
	off, err := strconv.ParseUint(m.Header.Get(hdrOffset), 10, 64)
	epoch := m.Header.Get(hdrEpoch)
	if err != nil || epoch == "" {
		return broker.StreamPosition{}, false
	}
	return broker.StreamPosition{Offset: off, Epoch: epoch}, true
}

func (b *Broker) publishHistory(ctx context.Context, ch, tok string, body []byte, opts broker.PublishOptions) (broker.StreamPosition, error) {
	cp := b.pubs.acquire(ch)
	defer b.pubs.release(cp)

	// With an idempotency key the publication carries it as Nats-Msg-Id:
	// JetStream then stores it at most once within its duplicate window,
	// atomically with the offset's compare-and-set.
	var msgID, recordSubject string
	var idemTTL time.Duration
	if opts.IdempotencyKey != "" {
		var key string
		key, idemTTL = idempotencyKey(ch, opts)
		msgID, recordSubject = "wsgate-"+key, b.idemSubject(tok, key)
		if err := b.widenDuplicateWindow(ctx, idemTTL); err != nil {
			return broker.StreamPosition{}, err
		}
		// A record outlives the publication's message (which history size
		// may trim and a NATS restart forgets in the dedupe window).
		rec, err := b.leaderGet(ctx, b.historyStream, msgGetRequest{LastFor: recordSubject})
		if err != nil {
			return broker.StreamPosition{}, err
		}
		if sp, ok := parseIdemRecord(rec, time.Now()); ok {
			return sp, nil
		}
	}

	metaTTL := opts.HistoryMetaTTL
	if metaTTL == 0 {
		metaTTL = b.opts.HistoryMetaTTL
	}
	id := nuid.Next()
	subject := b.historySubject(tok)
	var ambiguous []uint64 // expected sequences of attempts with unknown outcome
	var lastErr error
	for attempt := 0; ; attempt++ {
		if attempt == maxPublishAttempts {
			return broker.StreamPosition{}, unavailable(fmt.Errorf("publishing to %q: no success after %d attempts (last error: %w)", ch, attempt, lastErr))
		}
		if err := ctx.Err(); err != nil {
			if lastErr != nil {
				return broker.StreamPosition{}, fmt.Errorf("natsbroker: publishing to %q: %w (last error: %w)", ch, err, lastErr)
			}
			return broker.StreamPosition{}, fmt.Errorf("natsbroker: %w", err)
		}
		now := time.Now()
		if cp.ok && !cp.top.expires.IsZero() && !now.Before(cp.top.expires) {
			cp.ok = false
		}
		if !cp.ok {
			top, err := b.readTop(ctx, tok)
			if err != nil {
				if len(ambiguous) > 0 && errors.Is(err, broker.ErrUnavailable) {
					// An earlier attempt may have succeeded: keep trying to
					// find out rather than leave the caller guessing.
					lastErr = err
					backoff(ctx, attempt)
					continue
				}
				return broker.StreamPosition{}, err
			}
			cp.top, cp.ok = top, true
		}
		// Did an earlier attempt whose answer was lost succeed after all?
		if len(ambiguous) > 0 {
			if sp, found, err := b.findOwn(ctx, subject, id, ambiguous); err != nil {
				if errors.Is(err, broker.ErrUnavailable) {
					lastErr = err
					cp.ok = false
					backoff(ctx, attempt)
					continue
				}
				return broker.StreamPosition{}, err
			} else if found {
				cp.ok = false
				return sp, nil
			}
		}

		top := cp.top
		epoch, offset := top.epoch, top.offset+1
		newLife := epoch == ""
		if newLife {
			epoch, offset = newEpoch(), 1
		}
		msg := nats.NewMsg(subject)
		msg.Header.Set(hdrKind, kindPub)
		msg.Header.Set(hdrEpoch, epoch)
		msg.Header.Set(hdrOffset, strconv.FormatUint(offset, 10))
		msg.Header.Set(hdrHistory, formatHistoryHeader(opts.HistorySize, opts.HistoryTTL))
		msg.Header.Set(hdrID, id)
		msg.Header.Set(hdrExpectSubSeq, strconv.FormatUint(top.seq, 10))
		msg.Header.Set(hdrTTL, ttlHeader(opts.HistoryTTL+metaTTL))
		if newLife || opts.HistorySize == 1 {
			// Drop what is left of an earlier life, or keep just this one.
			msg.Header.Set(hdrRollup, "sub")
		}
		if msgID != "" {
			msg.Header.Set(hdrMsgID, msgID)
		}
		msg.Data = body

		ack, err := b.jsPublish(ctx, msg)
		switch {
		case err == nil && ack.Duplicate:
			cp.ok = false
			return b.resolveDuplicate(ctx, recordSubject, msgID, ack.Seq)
		case err == nil:
			cp.top = streamTop{seq: ack.Seq, epoch: epoch, offset: offset, expires: now.Add(opts.HistoryTTL + metaTTL),
				size: opts.HistorySize, ttl: opts.HistoryTTL}
			sp := broker.StreamPosition{Offset: offset, Epoch: epoch}
			if recordSubject != "" {
				b.writeIdemRecord(ctx, recordSubject, sp, idemTTL)
			}
			b.maybeTrim(tok, opts.HistorySize, offset)
			return sp, nil
		case hasErrCode(err, errCodeWrongLastSeq, errCodeWrongLastSeqConst, errCodeDupInProcess):
			// Another node published first (or is publishing now).
			cp.ok = false
			backoff(ctx, attempt)
		case errors.Is(err, broker.ErrUnavailable) && b.nc.Status() == nats.CONNECTED:
			// The request may have been stored with its answer lost (a
			// timeout, a leader change).
			ambiguous = append(ambiguous, top.seq)
			lastErr = err
			cp.ok = false
			backoff(ctx, attempt)
		default:
			return broker.StreamPosition{}, err
		}
	}
}

// backoff pauses a retry a little longer each time, with jitter, so that
// nodes contending for one channel spread out.
func backoff(ctx context.Context, attempt int) {
	if attempt == 0 {
		return
	}
	d := time.Duration(min(attempt, 20)) * 500 * time.Microsecond
	n, _ := rand.Int(rand.Reader, big.NewInt(int64(d)))
	t := time.NewTimer(d/2 + time.Duration(n.Int64()))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// findOwn looks, after each expected sequence of an attempt whose outcome
// is unknown, for the message this Publish wrote (its Wsgate-Id). Only the
// message right after the expected sequence can be ours.
func (b *Broker) findOwn(ctx context.Context, subject, id string, expected []uint64) (broker.StreamPosition, bool, error) {
	for _, seq := range expected {
		m, err := b.leaderGet(ctx, b.historyStream, msgGetRequest{Seq: seq + 1, NextFor: subject})
		if err != nil {
			return broker.StreamPosition{}, false, err
		}
		if m != nil && m.Header.Get(hdrID) == id {
			off, _ := strconv.ParseUint(m.Header.Get(hdrOffset), 10, 64)
			return broker.StreamPosition{Offset: off, Epoch: m.Header.Get(hdrEpoch)}, true, nil
		}
	}
	return broker.StreamPosition{}, false, nil
}

// resolveDuplicate returns the position of the first publication with an
// idempotency key, from its message or, once that is trimmed, from the
// key's record.
func (b *Broker) resolveDuplicate(ctx context.Context, recordSubject, msgID string, seq uint64) (broker.StreamPosition, error) {
	m, err := b.leaderGet(ctx, b.historyStream, msgGetRequest{Seq: seq})
	if err != nil {
		return broker.StreamPosition{}, err
	}
	if m != nil && m.Header.Get(hdrKind) == kindPub && m.Header.Get(hdrMsgID) == msgID {
		off, err := strconv.ParseUint(m.Header.Get(hdrOffset), 10, 64)
		if err == nil {
			return broker.StreamPosition{Offset: off, Epoch: m.Header.Get(hdrEpoch)}, nil
		}
	}
	rec, err := b.leaderGet(ctx, b.historyStream, msgGetRequest{LastFor: recordSubject})
	if err != nil {
		return broker.StreamPosition{}, err
	}
	if sp, ok := parseIdemRecord(rec, time.Now()); ok {
		return sp, nil
	}
	return broker.StreamPosition{}, fmt.Errorf("natsbroker: publication already made with this idempotency key, its position is no longer known")
}

// writeIdemRecord stores the position of a publication made with an
// idempotency key. Failing to write it only weakens deduplication after
// the publication is trimmed, so it is logged, not returned.
func (b *Broker) writeIdemRecord(ctx context.Context, subject string, sp broker.StreamPosition, ttl time.Duration) {
	rec := nats.NewMsg(subject)
	rec.Header.Set(hdrEpoch, sp.Epoch)
	rec.Header.Set(hdrOffset, strconv.FormatUint(sp.Offset, 10))
	rec.Header.Set(hdrTTL, ttlHeader(ttl))
	rec.Header.Set(hdrRollup, "sub")
	if _, err := b.jsPublish(context.WithoutCancel(ctx), rec); err != nil {
		b.opts.Logger.Warn("natsbroker: storing an idempotency record", "subject", subject, "error", err)
	}
}

// trimRequest asks the trimmer to cut a channel's history to size.
type trimRequest struct {
	subject string
	keep    int
}

// maybeTrim enforces HistorySize in storage now and then: every
// max(1, size/4) publications the subject is purged down to its last size
// messages, so storage holds at most 1.25×size of them. History filters by
// offset, so what is still stored between two trims is never returned.
func (b *Broker) maybeTrim(tok string, size int, offset uint64) {
	if size <= 1 {
		return // size 1 rolls up on every publish
	}
	step := uint64(max(1, size/4))
	if offset <= uint64(size) || offset%step != 0 {
		return
	}
	select {
	case b.trims <- trimRequest{subject: b.historySubject(tok), keep: size}:
	default:
		// The trimmer is behind; a later publication asks again.
	}
}

// runTrimmer purges what maybeTrim asks for.
func (b *Broker) runTrimmer() {
	for {
		select {
		case <-b.closing:
			return
		case r := <-b.trims:
			ctx, cancel := context.WithTimeout(context.Background(), b.opts.RequestTimeout)
			if err := b.purge(ctx, b.historyStream, r.subject, uint64(r.keep)); err != nil {
				b.opts.Logger.Warn("natsbroker: trimming history", "subject", r.subject, "error", err)
			}
			cancel()
		}
	}
}
