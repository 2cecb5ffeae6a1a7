package hub

import (
	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/broker"
)

// Codec encodes what the hub sends to clients in one protocol's wire
// format (package centrifugo has the JSON and Protobuf codecs of the
// Centrifugo client protocol). Every client has one. Implementations must
// be safe for concurrent use and comparable (a pointer), because the hub
// encodes each publication once per distinct codec among a channel's
// subscribers and writes the same bytes to all of them.
type Codec interface {
	// MessageType is the WebSocket message type of every frame.
	MessageType() wsgate.MessageType
	// EncodePublication encodes a publication push in ch.
	EncodePublication(ch string, pub *broker.Publication) ([]byte, error)
	// EncodeJoin and EncodeLeave encode presence pushes in ch.
	EncodeJoin(ch string, info *broker.ClientInfo) ([]byte, error)
	EncodeLeave(ch string, info *broker.ClientInfo) ([]byte, error)
	// EncodeUnsubscribe encodes the push that tells a client the server
	// ended its subscription to ch.
	EncodeUnsubscribe(ch string, u Unsubscribe) ([]byte, error)
	// EncodeSubscribe encodes the push of a server-side subscription made
	// after the connection was established.
	EncodeSubscribe(ch string, res *SubscribeResult) ([]byte, error)
	// EncodeMessage encodes an asynchronous message to the client.
	EncodeMessage(data []byte) ([]byte, error)
	// EncodePing returns the application-level ping frame's payload.
	EncodePing() []byte
}

// codecCache keeps one encoded message per codec while a publication is
// fanned out. Four slots cover every realistic mix of protocols without
// allocating; more codecs still work, encoding again past the fourth.
type codecCache struct {
	n     int
	codec [4]Codec
	pm    [4]*wsgate.PreparedMessage
}

// get returns the prepared message of codec, encoding it with enc on first
// use. It returns nil when the codec cannot encode the message.
func (cc *codecCache) get(codec Codec, enc func(Codec) ([]byte, error)) *wsgate.PreparedMessage {
	for i := 0; i < cc.n; i++ {
		if cc.codec[i] == codec {
			return cc.pm[i]
		}
	}
	var pm *wsgate.PreparedMessage
	if b, err := enc(codec); err == nil {
		pm, _ = wsgate.NewPreparedMessage(codec.MessageType(), b)
	}
	if cc.n < len(cc.codec) {
		cc.codec[cc.n], cc.pm[cc.n] = codec, pm
		cc.n++
	}
	return pm
}
