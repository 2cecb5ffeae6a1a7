package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/centrifugal/protocol"
)

// The pubsub mode speaks the client side of Centrifugo's client protocol
// v2 in its JSON form (github.com/centrifugal/protocol has the types): a
// client sends commands and the server answers each with a reply carrying
// the same id, or sends pushes (id 0) such as publications. Several replies
// and pushes may share one WebSocket frame, one JSON object per line; the
// server's ping is an empty reply ({}) and the client's pong an empty
// command.

// Command ids the mode uses. Publications get ids from firstPublishID up.
const (
	connectID      = 1
	subscribeID    = 2
	firstPublishID = 3
)

var (
	cmdEncoder = protocol.NewJSONCommandEncoder()
	pongFrame  = []byte("{}")
)

// encodeCommand encodes one command; the protocol types always encode.
func encodeCommand(cmd *protocol.Command) []byte {
	b, err := cmdEncoder.Encode(cmd)
	if err != nil {
		panic(fmt.Sprintf("loadtest: encoding %v: %v", cmd, err)) // a bug: our commands are well formed
	}
	return b
}

func connectCommand() []byte {
	return encodeCommand(&protocol.Command{Id: connectID, Connect: &protocol.ConnectRequest{Name: "wsgate-bench"}})
}

func subscribeCommand(channel string) []byte {
	return encodeCommand(&protocol.Command{Id: subscribeID, Subscribe: &protocol.SubscribeRequest{Channel: channel}})
}

func publishCommand(id uint32, channel string, data []byte) []byte {
	return encodeCommand(&protocol.Command{Id: id, Publish: &protocol.PublishRequest{Channel: channel, Data: data}})
}

// Publication data. It is a JSON string that starts with the text stamp
// (marker, sequence number and send time, see stamp) and is padded to the
// requested size: "wb<seq><ts>abcdef…".
const pubMinSize = 2 + textHeader

// stampPub writes a publication's data of len(p) bytes into p.
func stampPub(p []byte, seq uint32, ts int64) {
	p[0] = '"'
	p[len(p)-1] = '"'
	stamp(p[1:len(p)-1], false, seq, ts)
}

// newPubData returns a publication data buffer of size bytes.
func newPubData(size int) []byte {
	p := newPayload(size)
	stampPub(p, 0, 0)
	return p
}

// unstampPub reads back what stampPub wrote; ok is false for data that is
// not one of ours.
func unstampPub(p []byte) (seq uint32, ts int64, ok bool) {
	if len(p) < pubMinSize || p[0] != '"' || p[len(p)-1] != '"' {
		return 0, 0, false
	}
	return unstamp(p[1:len(p)-1], false, len(p)-2)
}

// replyKind classifies one line of a server frame.
type replyKind int

const (
	replyOther       replyKind = iota // anything we do not act on
	replyPublication                  // a publication push
	replyPing                         // an empty reply: the server's ping
	replyResult                       // a reply to a command (id > 0), maybe an error
)

// serverLine is one decoded line of a server frame. Data aliases the frame
// on the fast path: use it before the next call.
type serverLine struct {
	kind    replyKind
	id      uint32
	channel []byte
	data    []byte
	err     *protocol.Error
	pong    bool // connect result: the server wants pongs
}

// pushPrefix and pushMiddle frame a publication push as Centrifugo, wsgate's
// hub and the baselines encode it, data first:
// {"push":{"channel":"C","pub":{"data":D,…}}}, where … may be the
// publisher's client info or an offset.
var (
	pushPrefix = []byte(`{"push":{"channel":"`)
	pushMiddle = []byte(`","pub":{"data":"`)
	pushSuffix = []byte(`}}}`)
)

// lineReader walks the lines of a server frame. The common case, a
// publication whose data is our JSON string, is recognised without a full
// decode; every other line goes through the protocol's JSON decoder.
type lineReader struct {
	rest []byte
	dec  protocol.JSONReplyDecoder
}

func (lr *lineReader) reset(frame []byte) { lr.rest = frame }

// next decodes the next line into l; it returns io.EOF after the last one.
func (lr *lineReader) next(l *serverLine) error {
	for len(lr.rest) > 0 {
		line := lr.rest
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line, lr.rest = line[:i], line[i+1:]
		} else {
			lr.rest = nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		*l = serverLine{}
		if fastPush(line, l) {
			return nil
		}
		return lr.decode(line, l)
	}
	return io.EOF
}

// fastPush recognises a publication push whose channel and data are
// strings without escapes and whose data comes first in the publication.
// The fields after the data (client info, offset) are skipped unread.
func fastPush(line []byte, l *serverLine) bool {
	if !bytes.HasPrefix(line, pushPrefix) || !bytes.HasSuffix(line, pushSuffix) {
		return false
	}
	rest := line[len(pushPrefix) : len(line)-len(pushSuffix)]
	i := bytes.Index(rest, pushMiddle)
	if i < 0 {
		return false
	}
	ch := rest[:i]
	str := rest[i+len(pushMiddle):] // the data string's contents, then the rest
	end := bytes.IndexByte(str, '"')
	if end < 0 || bytes.IndexByte(ch, '\\') >= 0 || bytes.IndexByte(ch, '"') >= 0 || bytes.IndexByte(str[:end], '\\') >= 0 {
		return false
	}
	if after := str[end+1:]; len(after) > 0 && after[0] != ',' {
		return false
	}
	start := i + len(pushMiddle) - 1 // the data's opening quote
	l.kind, l.channel, l.data = replyPublication, ch, rest[start:start+end+2]
	return true
}

// errMalformed marks a server line that is not a valid reply.
var errMalformed = errors.New("malformed reply")

func (lr *lineReader) decode(line []byte, l *serverLine) error {
	lr.dec.Reset(line)
	r, err := lr.dec.Decode()
	if err != nil {
		return fmt.Errorf("%w: %v: %.80q", errMalformed, err, line)
	}
	switch {
	case r.Id > 0:
		l.kind, l.id, l.err = replyResult, r.Id, r.Error
		if r.Connect != nil {
			l.pong = r.Connect.Pong
		}
	case r.Push != nil:
		if r.Push.Pub != nil {
			l.kind, l.channel, l.data = replyPublication, []byte(r.Push.Channel), r.Push.Pub.Data
		}
	case r.Error == nil:
		l.kind = replyPing
	}
	return nil
}

// protoError formats a protocol error reply.
func protoError(e *protocol.Error) string {
	return fmt.Sprintf("error %d %s", e.Code, e.Message)
}

// apiPublisher publishes through the server HTTP API, one request at a
// time on one kept-alive connection, so that publications stay in order.
type apiPublisher struct {
	url     string
	key     string
	channel string
	client  *http.Client
	body    bytes.Buffer
}

// apiURLFor derives the HTTP API publish endpoint from the WebSocket URL:
// same host, path /api/publish.
func apiURLFor(wsURL string) (string, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	}
	u.Path, u.RawQuery, u.Fragment = "/api/publish", "", ""
	return u.String(), nil
}

func newAPIPublisher(cfg *Config, d *dialer) *apiPublisher {
	tr := &http.Transport{
		DialContext:         d.dialContext,
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
	}
	return &apiPublisher{
		url:     cfg.APIURL,
		key:     cfg.APIKey,
		channel: cfg.Channel,
		client:  &http.Client{Transport: tr, Timeout: 10 * time.Second},
	}
}

// apiResponse is the part of an HTTP API response the mode reads.
type apiResponse struct {
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// publish sends one publication and waits for the server's answer.
func (p *apiPublisher) publish(ctx context.Context, data []byte) error {
	p.body.Reset()
	p.body.WriteString(`{"channel":`)
	ch, _ := json.Marshal(p.channel)
	p.body.Write(ch)
	p.body.WriteString(`,"data":`)
	p.body.Write(data)
	p.body.WriteByte('}')
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(p.body.Bytes()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if p.key != "" {
		req.Header.Set("X-API-Key", p.key)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("%w: %v: %.80q", errMalformed, err, body)
	}
	if r.Error != nil {
		return fmt.Errorf("error %d %s", r.Error.Code, r.Error.Message)
	}
	return nil
}

func (p *apiPublisher) close() { p.client.CloseIdleConnections() }
