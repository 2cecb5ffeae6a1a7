package centrifugo

import (
	"encoding/binary"

	"github.com/centrifugal/protocol"
	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/hub"
)

// codec is the hub.Codec of one encoding of the Centrifugo client
// protocol. Pushes are Replies with only push set; in Protobuf every
// message of a frame is prefixed with its varint length, in JSON a frame
// holds one message per line.
type codec struct {
	typ protocol.Type
	enc protocol.ReplyEncoder
}

var (
	jsonCodec     = &codec{typ: protocol.TypeJSON, enc: protocol.NewJSONReplyEncoder()}
	protobufCodec = &codec{typ: protocol.TypeProtobuf, enc: protocol.NewProtobufReplyEncoder()}
)

var _ hub.Codec = jsonCodec

func (c *codec) MessageType() wsgate.MessageType {
	if c.typ == protocol.TypeJSON {
		return wsgate.TextMessage
	}
	return wsgate.BinaryMessage
}

// encode encodes one reply as a frame of its own.
func (c *codec) encode(r *protocol.Reply) ([]byte, error) {
	b, err := c.enc.Encode(r)
	if err != nil || c.typ == protocol.TypeJSON {
		return b, err
	}
	return lengthPrefixed(b), nil
}

func lengthPrefixed(b []byte) []byte {
	var l [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(l[:], uint64(len(b)))
	out := make([]byte, n+len(b))
	copy(out, l[:n])
	copy(out[n:], b)
	return out
}

func (c *codec) push(p *protocol.Push) ([]byte, error) {
	return c.encode(&protocol.Reply{Push: p})
}

func (c *codec) EncodePublication(ch string, pub *broker.Publication) ([]byte, error) {
	return c.push(&protocol.Push{Channel: ch, Pub: pubToProto(pub)})
}

func (c *codec) EncodeJoin(ch string, info *broker.ClientInfo) ([]byte, error) {
	return c.push(&protocol.Push{Channel: ch, Join: &protocol.Join{Info: infoToProto(info)}})
}

func (c *codec) EncodeLeave(ch string, info *broker.ClientInfo) ([]byte, error) {
	return c.push(&protocol.Push{Channel: ch, Leave: &protocol.Leave{Info: infoToProto(info)}})
}

func (c *codec) EncodeUnsubscribe(ch string, u hub.Unsubscribe) ([]byte, error) {
	return c.push(&protocol.Push{Channel: ch, Unsubscribe: &protocol.Unsubscribe{Code: u.Code, Reason: u.Reason}})
}

func (c *codec) EncodeSubscribe(ch string, res *hub.SubscribeResult) ([]byte, error) {
	return c.push(&protocol.Push{Channel: ch, Subscribe: &protocol.Subscribe{
		Recoverable: res.Recoverable,
		Epoch:       res.Epoch,
		Offset:      res.Offset,
		Positioned:  res.Positioned,
		Data:        res.Data,
	}})
}

func (c *codec) EncodeMessage(data []byte) ([]byte, error) {
	return c.push(&protocol.Push{Message: &protocol.Message{Data: data}})
}

// EncodePing returns the empty reply: "{}" in JSON, a zero length in
// Protobuf.
func (c *codec) EncodePing() []byte {
	if c.typ == protocol.TypeJSON {
		return []byte("{}")
	}
	return []byte{0}
}

func infoToProto(info *broker.ClientInfo) *protocol.ClientInfo {
	if info == nil {
		return nil
	}
	return &protocol.ClientInfo{User: info.UserID, Client: info.ClientID, ConnInfo: info.ConnInfo, ChanInfo: info.ChanInfo}
}

func pubToProto(pub *broker.Publication) *protocol.Publication {
	return &protocol.Publication{Data: pub.Data, Offset: pub.Offset, Info: infoToProto(pub.Info), Tags: pub.Tags}
}

func pubsToProto(pubs []*broker.Publication) []*protocol.Publication {
	if len(pubs) == 0 {
		return nil
	}
	out := make([]*protocol.Publication, len(pubs))
	for i, p := range pubs {
		out[i] = pubToProto(p)
	}
	return out
}

func subscribeResultToProto(r *hub.SubscribeResult) *protocol.SubscribeResult {
	return &protocol.SubscribeResult{
		Expires:       r.Expires,
		Ttl:           r.TTL,
		Recoverable:   r.Recoverable,
		Epoch:         r.Epoch,
		Publications:  pubsToProto(r.Publications),
		Recovered:     r.Recovered,
		Offset:        r.Offset,
		Positioned:    r.Positioned,
		Data:          r.Data,
		WasRecovering: r.WasRecovering,
	}
}
