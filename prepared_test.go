package wsgate_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/wsgate/wsgate"
)

func TestWritePrepared(t *testing.T) {
	for _, compress := range []bool{false, true} {
		name := "plain"
		if compress {
			name = "compressed"
		}
		t.Run(name, func(t *testing.T) {
			opts := &wsgate.Options{Compression: compress}
			payload := bytes.Repeat([]byte("prepared message "), 100)
			pm, err := wsgate.NewPreparedMessage(wsgate.TextMessage, payload)
			if err != nil {
				t.Fatal(err)
			}
			payload[0] = 'X' // the message holds its own copy
			var clients []*wsgate.Conn
			for range 3 {
				server, client := pair(t, opts, opts)
				if server.Compressed() != compress {
					t.Fatalf("Compressed() = %v", server.Compressed())
				}
				// Server side: the prepared frame; client side: encoded and masked per connection.
				if err := server.WritePrepared(context.Background(), pm); err != nil {
					t.Fatal(err)
				}
				if err := client.WritePrepared(context.Background(), pm); err != nil {
					t.Fatal(err)
				}
				typ, got := read(t, server)
				if typ != wsgate.TextMessage || !bytes.Equal(got, bytes.Repeat([]byte("prepared message "), 100)) {
					t.Fatalf("server read %v %q", typ, got[:20])
				}
				clients = append(clients, client)
			}
			for _, c := range clients {
				typ, got := read(t, c)
				if typ != wsgate.TextMessage || !bytes.Equal(got, bytes.Repeat([]byte("prepared message "), 100)) {
					t.Fatalf("client read %v %q", typ, got[:20])
				}
			}
		})
	}
}

func TestNewPreparedMessageRejectsInvalidText(t *testing.T) {
	if _, err := wsgate.NewPreparedMessage(wsgate.TextMessage, []byte{0xff}); !errors.Is(err, wsgate.ErrInvalidUTF8) {
		t.Fatalf("err = %v, want ErrInvalidUTF8", err)
	}
	pm, err := wsgate.NewPreparedMessage(wsgate.BinaryMessage, []byte{0xff})
	if err != nil || pm.Type() != wsgate.BinaryMessage || pm.Len() != 1 {
		t.Fatalf("binary: %v %v", pm, err)
	}
}

func TestWritePreparedAfterCloseFails(t *testing.T) {
	server, _ := pair(t, nil, nil)
	pm, _ := wsgate.NewPreparedMessage(wsgate.BinaryMessage, []byte("x"))
	server.Close()
	if err := server.WritePrepared(context.Background(), pm); !errors.Is(err, wsgate.ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
}
