package natsbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/broker"
)

// The JetStream API is used through its wire protocol (JSON requests to
// $JS.API subjects) where nats.go's jetstream package does not offer what
// the broker needs: reads that must come from the stream leader although
// the stream allows direct reads from replicas, batched direct reads, and
// publish acknowledgements with their exact error codes.

// JetStream error codes the broker reacts to.
const (
	errCodeNoMessage         = 10037 // no message found
	errCodeWrongLastSeq      = 10071 // wrong last sequence: {seq}
	errCodeWrongLastSeqConst = 10164 // wrong last sequence (subject in flight)
	errCodeDupInProcess      = 10158 // duplicate message id is in process
)

// Header names. Nats-* are JetStream's; Wsgate-* are ours.
const (
	hdrMsgID        = "Nats-Msg-Id"
	hdrExpectSubSeq = "Nats-Expected-Last-Subject-Sequence"
	hdrTTL          = "Nats-TTL"
	hdrRollup       = "Nats-Rollup"
	hdrStreamSeq    = "Nats-Sequence"
	hdrTimeStamp    = "Nats-Time-Stamp"
	hdrSubject      = "Nats-Subject"
	hdrNumPending   = "Nats-Num-Pending"

	hdrKind    = "Wsgate-Kind"    // kindPub, kindJoin, kindLeave, kindMeta
	hdrEpoch   = "Wsgate-Epoch"   // the stream's epoch
	hdrOffset  = "Wsgate-Offset"  // the publication's offset (or the stream's, for kindMeta)
	hdrHistory = "Wsgate-History" // "size/ttl-ms" the publication was made with
	hdrID      = "Wsgate-Id"      // unique per Publish call, to resolve ambiguous outcomes
)

// Values of hdrKind.
const (
	kindPub   = "pub"
	kindJoin  = "join"
	kindLeave = "leave"
	// kindMeta marks a history message that carries no publication, only
	// the stream's position: the first message of a stream created by
	// History, the tombstone written by RemoveHistory, and the renewal of a
	// stream's meta TTL.
	kindMeta = "meta"
)

// apiError is a JetStream API error.
type apiError struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("natsbroker: jetstream: %s (code %d, error code %d)", e.Description, e.Code, e.ErrCode)
}

// apiErr returns e as an error; JetStream's 503 (no leader right now, a
// cluster forming or electing) is broker.ErrUnavailable.
func apiErr(e *apiError) error {
	if e.Code == 503 {
		return unavailable(e)
	}
	return e
}

func hasErrCode(err error, codes ...int) bool {
	var ae *apiError
	if !errors.As(err, &ae) {
		return false
	}
	for _, c := range codes {
		if ae.ErrCode == c {
			return true
		}
	}
	return false
}

// unavailable wraps err as broker.ErrUnavailable: the request may be
// retried.
func unavailable(err error) error {
	return fmt.Errorf("%w: %w", broker.ErrUnavailable, err)
}

// transportError classifies an error of a NATS request: a timeout, a
// missing responder (no JetStream leader right now) or a lost connection
// means unavailable.
func transportError(err error) error {
	switch {
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrReconnectBufExceeded):
		return unavailable(err)
	}
	return fmt.Errorf("natsbroker: %w", err)
}

// request sends one request bounded by the broker's RequestTimeout and
// ctx.
func (b *Broker) request(ctx context.Context, msg *nats.Msg) (*nats.Msg, error) {
	if b.nc.Status() != nats.CONNECTED {
		return nil, unavailable(fmt.Errorf("NATS connection %s", b.nc.Status()))
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
	defer cancel()
	resp, err := b.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return nil, fmt.Errorf("natsbroker: %w", err)
		}
		return nil, transportError(err)
	}
	return resp, nil
}

// pubAck is JetStream's answer to a publication.
type pubAck struct {
	Stream    string    `json:"stream"`
	Seq       uint64    `json:"seq"`
	Duplicate bool      `json:"duplicate"`
	Error     *apiError `json:"error"`
}

// jsPublish stores msg in its stream and returns the acknowledgement; a
// refusal is an *apiError.
func (b *Broker) jsPublish(ctx context.Context, msg *nats.Msg) (pubAck, error) {
	resp, err := b.request(ctx, msg)
	if err != nil {
		return pubAck{}, err
	}
	var ack pubAck
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		return pubAck{}, fmt.Errorf("natsbroker: bad publish acknowledgement %q: %w", resp.Data, err)
	}
	if ack.Error != nil {
		return pubAck{}, apiErr(ack.Error)
	}
	return ack, nil
}

// storedMsg is a message read from a stream.
type storedMsg struct {
	Subject string
	Seq     uint64
	Header  nats.Header
	Data    []byte
	Time    time.Time
}

// msgGetRequest is the body of $JS.API.STREAM.MSG.GET and
// $JS.API.DIRECT.GET requests.
type msgGetRequest struct {
	Seq       uint64     `json:"seq,omitempty"`
	LastFor   string     `json:"last_by_subj,omitempty"`
	NextFor   string     `json:"next_by_subj,omitempty"`
	Batch     int        `json:"batch,omitempty"`
	StartTime *time.Time `json:"start_time,omitempty"`
}

// leaderGet reads one message through the stream leader, so the answer
// reflects every acknowledged write. It returns nil, nil when there is no
// such message.
func (b *Broker) leaderGet(ctx context.Context, stream string, req msgGetRequest) (*storedMsg, error) {
	body, _ := json.Marshal(req)
	resp, err := b.request(ctx, &nats.Msg{Subject: "$JS.API.STREAM.MSG.GET." + stream, Data: body})
	if err != nil {
		return nil, err
	}
	var r struct {
		Message *struct {
			Subject string    `json:"subject"`
			Seq     uint64    `json:"seq"`
			Header  []byte    `json:"hdrs"`
			Data    []byte    `json:"data"`
			Time    time.Time `json:"time"`
		} `json:"message"`
		Error *apiError `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return nil, fmt.Errorf("natsbroker: bad message get response: %w", err)
	}
	if r.Error != nil {
		if r.Error.ErrCode == errCodeNoMessage {
			return nil, nil
		}
		return nil, apiErr(r.Error)
	}
	if r.Message == nil {
		return nil, errors.New("natsbroker: empty message get response")
	}
	m := &storedMsg{Subject: r.Message.Subject, Seq: r.Message.Seq, Data: r.Message.Data, Time: r.Message.Time}
	if len(r.Message.Header) > 0 {
		if m.Header, err = nats.DecodeHeadersMsg(r.Message.Header); err != nil {
			return nil, fmt.Errorf("natsbroker: bad stored headers: %w", err)
		}
	}
	return m, nil
}

// directBatch reads up to batch messages on subject (which may hold
// wildcards) from seq or startTime on, from whichever server holds a copy
// of the stream: it may lag behind the leader. It also reports whether the
// server has more.
func (b *Broker) directBatch(ctx context.Context, stream, subject string, seq uint64, startTime *time.Time, batch int) ([]*storedMsg, bool, error) {
	if b.nc.Status() != nats.CONNECTED {
		return nil, false, unavailable(fmt.Errorf("NATS connection %s", b.nc.Status()))
	}
	req := msgGetRequest{NextFor: subject, Batch: batch}
	if startTime != nil {
		req.StartTime = startTime
	} else {
		req.Seq = max(seq, 1)
	}
	body, _ := json.Marshal(req)
	inbox := nats.NewInbox()
	sub, err := b.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, false, transportError(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := b.nc.PublishRequest("$JS.API.DIRECT.GET."+stream, inbox, body); err != nil {
		return nil, false, transportError(err)
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
	defer cancel()
	var out []*storedMsg
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, false, transportError(err)
		}
		if status := m.Header.Get("Status"); status != "" {
			switch status {
			case "204": // end of batch
				pending, _ := strconv.ParseUint(m.Header.Get(hdrNumPending), 10, 64)
				return out, pending > 0, nil
			case "404": // nothing (more) to read
				return out, false, nil
			case "503":
				return nil, false, unavailable(fmt.Errorf("direct get: %s %s", status, m.Header.Get("Description")))
			}
			return nil, false, fmt.Errorf("natsbroker: direct get: status %s %s", status, m.Header.Get("Description"))
		}
		sm := &storedMsg{Subject: m.Header.Get(hdrSubject), Header: m.Header, Data: m.Data}
		sm.Seq, err = strconv.ParseUint(m.Header.Get(hdrStreamSeq), 10, 64)
		if err != nil {
			return nil, false, fmt.Errorf("natsbroker: direct get: bad sequence %q", m.Header.Get(hdrStreamSeq))
		}
		sm.Time, _ = time.Parse(time.RFC3339Nano, m.Header.Get(hdrTimeStamp))
		out = append(out, sm)
	}
}

// purge removes the messages on subject, keeping the last keep of them.
func (b *Broker) purge(ctx context.Context, stream, subject string, keep uint64) error {
	body, _ := json.Marshal(struct {
		Filter string `json:"filter"`
		Keep   uint64 `json:"keep,omitempty"`
	}{subject, keep})
	resp, err := b.request(ctx, &nats.Msg{Subject: "$JS.API.STREAM.PURGE." + stream, Data: body})
	if err != nil {
		return err
	}
	var r struct {
		Error *apiError `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return fmt.Errorf("natsbroker: bad purge response: %w", err)
	}
	if r.Error != nil {
		return apiErr(r.Error)
	}
	return nil
}

// ttlHeader formats d as a Nats-TTL value: whole seconds, rounded up, at
// least one.
func ttlHeader(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(s, 1), 10)
}

// storedTTL returns a stored message's Nats-TTL, zero when it has none.
func storedTTL(h nats.Header) time.Duration {
	v := h.Get(hdrTTL)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.Duration(s) * time.Second
	}
	if d, err := time.ParseDuration(v); err == nil {
		return d
	}
	return 0
}
