// Package pubsub is the small subset of Centrifugo's client protocol (v2,
// JSON) that the pub/sub baselines in bench/servers speak, so that
// `wsgate-bench pubsub` drives them exactly as it drives Centrifugo and
// wsgate's hub. Each baseline brings its own connections and broadcast
// (that is what is compared); this package only decodes commands and
// encodes replies, with github.com/centrifugal/protocol like Centrifugo.
//
// The subset, on /connection/websocket:
//
//   - connect {} → {"id":N,"connect":{"client":"<n>","version":"0.0.0-bench"}}
//     (no token, no ping: the baselines send no pings, so no pongs are due)
//   - subscribe {"channel":C} → the connection joins C, then
//     {"id":N,"subscribe":{}}
//   - publish {"channel":C,"data":D} → {"id":N,"publish":{}} to the
//     publisher, and {"push":{"channel":C,"pub":{"data":D}}}, encoded once,
//     to every subscriber of C
//   - an empty command (a pong) is ignored; any other command gets
//     {"id":N,"error":{"code":104,"message":"method not found"}}
//
// and POST /api/publish with {"channel":C,"data":D} (X-API-Key checked
// when a key is configured) sends the same push and answers {"result":{}}.
//
// There is no history, presence, recovery, unsubscribe or authentication,
// and one WebSocket frame carries one reply or push: the baselines never
// coalesce.
package pubsub

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/centrifugal/protocol"
)

// Session is one client connection as a baseline server sees it.
type Session interface {
	// Reply writes a reply frame to this connection.
	Reply(frame []byte)
	// Subscribe adds this connection to channel. It must not return
	// before a publication to channel would reach the connection, so that
	// the subscribe reply, written next, guarantees delivery.
	Subscribe(channel string)
	// Publish sends push, one frame, to every subscriber of channel.
	// channel is only valid during the call.
	Publish(channel string, push []byte)
}

// ErrMalformed marks a frame that is not a valid command.
var ErrMalformed = errors.New("pubsub: malformed command")

var (
	replies  = protocol.NewJSONReplyEncoder()
	clientID atomic.Uint64
)

func encode(r *protocol.Reply) []byte {
	b, err := replies.Encode(r)
	if err != nil {
		panic(fmt.Sprintf("pubsub: encoding a reply: %v", err)) // our replies always encode
	}
	return b
}

// HandleFrame runs the commands of one WebSocket message (one per line)
// against s. A malformed command stops the frame with an error wrapping
// ErrMalformed; the commands before it have run.
func HandleFrame(frame []byte, s Session) error {
	dec := protocol.NewJSONCommandDecoder(frame)
	for {
		cmd, err := dec.Decode()
		if cmd != nil {
			handle(cmd, s)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
}

func handle(cmd *protocol.Command, s Session) {
	switch {
	case cmd.Id == 0:
		// A pong, or a send we do not implement: no reply either way.
	case cmd.Connect != nil:
		id := strconv.FormatUint(clientID.Add(1), 10)
		s.Reply(encode(&protocol.Reply{Id: cmd.Id, Connect: &protocol.ConnectResult{Client: id, Version: "0.0.0-bench"}}))
	case cmd.Subscribe != nil:
		// The decoder's strings alias the frame, which the server may reuse.
		s.Subscribe(strings.Clone(cmd.Subscribe.Channel))
		s.Reply(encode(&protocol.Reply{Id: cmd.Id, Subscribe: &protocol.SubscribeResult{}}))
	case cmd.Publish != nil:
		s.Publish(cmd.Publish.Channel, Push(cmd.Publish.Channel, cmd.Publish.Data))
		s.Reply(encode(&protocol.Reply{Id: cmd.Id, Publish: &protocol.PublishResult{}}))
	default:
		s.Reply(encode(&protocol.Reply{Id: cmd.Id, Error: &protocol.Error{Code: 104, Message: "method not found"}}))
	}
}

// Push encodes the publication push for data published to channel.
func Push(channel string, data []byte) []byte {
	return encode(&protocol.Reply{Push: &protocol.Push{Channel: channel, Pub: &protocol.Publication{Data: data}}})
}

// maxAPIBody bounds an HTTP API request body.
const maxAPIBody = 1 << 20

// APIHandler serves POST /api/publish: it decodes {"channel","data"} and
// calls publish with the push. When key is not empty, requests must carry
// it in X-API-Key (or Authorization: apikey KEY), or get 401.
func APIHandler(key string, publish func(channel string, push []byte)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if key != "" && r.Header.Get("X-API-Key") != key && r.Header.Get("Authorization") != "apikey "+key {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		var req struct {
			Channel string          `json:"channel"`
			Data    json.RawMessage `json:"data"`
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewDecoder(io.LimitReader(r.Body, maxAPIBody)).Decode(&req); err != nil || req.Channel == "" || len(req.Data) == 0 {
			w.Write([]byte(`{"error":{"code":107,"message":"bad request"}}`))
			return
		}
		publish(req.Channel, Push(req.Channel, req.Data))
		w.Write([]byte(`{"result":{}}`))
	})
}
