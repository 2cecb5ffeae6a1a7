package centrifugo

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/wsgate/wsgate/hub"
)

// FuzzCommandFrame feeds arbitrary frames to the command path (decoding,
// dispatch, the hub's operations and the replies) of a fresh connection,
// in JSON or Protobuf. Nothing may panic or hang; the seed corpus is in
// testdata/fuzz/FuzzCommandFrame.
func FuzzCommandFrame(f *testing.F) {
	f.Add(false, []byte(`{"id":1,"connect":{}}`))
	f.Add(false, []byte("{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"chat:a\",\"recover\":true,\"offset\":3,\"epoch\":\"x\"}}\n{\"id\":3,\"publish\":{\"channel\":\"chat:a\",\"data\":{\"a\":1}}}\n{\"id\":4,\"history\":{\"channel\":\"chat:a\",\"limit\":-1,\"since\":{\"offset\":0,\"epoch\":\"\"},\"reverse\":true}}"))
	f.Add(false, []byte(`{}`))
	f.Add(false, []byte(`{"id":1,"connect":{"token":"a.b.c","subs":{"x":{"recover":true}}}}`))
	cmd, _ := protocol.NewProtobufCommandEncoder().Encode(&protocol.Command{Id: 1, Connect: &protocol.ConnectRequest{}})
	sub, _ := protocol.NewProtobufCommandEncoder().Encode(&protocol.Command{Id: 2, Subscribe: &protocol.SubscribeRequest{Channel: "chat:b"}})
	f.Add(true, append(cmd, sub...))
	f.Add(true, []byte{0})
	f.Add(true, []byte{0x05, 0x08})

	cfg := testHubConfig()
	cfg.AllowAnonymous = true
	cfg.Logger = slog.New(slog.DiscardHandler)
	h, err := hub.New(context.Background(), cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.Shutdown(ctx)
	})
	handler := NewHandler(Config{Hub: h, Logger: slog.New(slog.DiscardHandler), CommandTimeout: time.Second})
	f.Fuzz(func(t *testing.T, protobuf bool, frame []byte) {
		s := &session{h: handler, proto: protocol.TypeJSON}
		codec := jsonCodec
		if protobuf {
			s.proto, codec = protocol.TypeProtobuf, protobufCodec
		}
		c := h.NewClient(nil, codec)
		if c == nil {
			t.Skip("hub closed")
		}
		s.attach(c)
		s.handleFrame(frame)
		s.handleFrame(frame) // again: now connected, or unusable
		c.Finish(nil)
	})
}
