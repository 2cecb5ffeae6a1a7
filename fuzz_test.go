package wsgate

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fuzzFrame encodes a masked client frame for the seed corpus.
func fuzzFrame(fin bool, op byte, rsv1 bool, p []byte) []byte {
	var hb [maxHeaderLen]byte
	h := putHeader(hb[:], fin, rsv1, op, len(p), true, 0x0badf00d)
	out := append([]byte(nil), hb[:h]...)
	start := len(out)
	out = append(out, p...)
	maskBytes(0x0badf00d, 0, out[start:])
	return out
}

func fuzzSeeds() [][]byte {
	z := (&deflater{}).compress(nil, bytes.Repeat([]byte("seed "), 100))
	var seeds [][]byte
	seeds = append(seeds,
		fuzzFrame(true, opText, false, []byte("hello")),
		append(fuzzFrame(false, opText, false, []byte("frag")), fuzzFrame(true, opContinuation, false, []byte("ment"))...),
		fuzzFrame(true, opPing, false, []byte("ping")),
		fuzzFrame(true, opClose, false, []byte{0x03, 0xe8, 'b', 'y', 'e'}),
		fuzzFrame(true, opBinary, true, z),
		fuzzFrame(true, opText, false, []byte{0xce, 0xba, 0xff}),
		append(fuzzFrame(false, opBinary, false, nil), fuzzFrame(true, opPing, false, nil)...),
		[]byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4},
		bytes.Repeat(fuzzFrame(true, opPing, false, bytes.Repeat([]byte("p"), 125)), 40),
	)
	return seeds
}

// FuzzReadPath sends any bytes, split anywhere, to a real server Conn on
// either transport, with or without permessage-deflate. The Conn must not
// panic, must end within a bounded time once the input ends, and must hold
// no more than its limits allow.
func FuzzReadPath(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s, uint64(0), byte(0))
		f.Add(s, uint64(0x0102030405060708), byte(3))
	}
	f.Fuzz(func(t *testing.T, input []byte, splits uint64, mode byte) {
		loopTransport := mode&1 != 0 && runtime.GOOS == "linux"
		compress := mode&2 != 0
		var client, server net.Conn
		if loopTransport {
			server, client = socketPair(t)
		} else {
			client, server = net.Pipe()
		}
		defer client.Close()
		budget := NewBudget(1 << 30)
		cfg := newConfig(&Options{
			ReadLimit:    64 << 10,
			PingInterval: -1,
			CloseTimeout: 200 * time.Millisecond,
			Budget:       budget,
			OnMessage: func(c *Conn, typ MessageType, p []byte) {
				c.Write(context.Background(), typ, p)
			},
		})
		c := newConn(server, true, cfg, "", nil)
		if compress {
			c.deflate = newDeflater(deflateParams{}, true)
		}
		if err := c.attach(server); err != nil {
			t.Fatal(err)
		}
		c.run(server, nil)
		go io.Copy(io.Discard, client)
		// Write the input in pieces whose sizes come from splits, for at
		// most a second: a connection that stopped reading is not a bug.
		client.SetWriteDeadline(time.Now().Add(time.Second))
		for len(input) > 0 {
			n := int(splits&0xff) + 1
			splits = splits>>8 | splits<<56
			n = min(n, len(input))
			if _, err := client.Write(input[:n]); err != nil {
				break
			}
			input = input[n:]
		}
		if held := budget.Used(); held > 1<<20 {
			t.Fatalf("the connection holds %d bytes", held)
		}
		client.Close()
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the connection did not end after its input did")
		}
		if used := budget.Used(); used != 0 {
			t.Fatalf("%d bytes still charged after the end", used)
		}
	})
}

// FuzzUpgradeRequest parses any request and runs it through Upgrade's
// checks and negotiation. Nothing may panic, and only a valid upgrade gets
// as far as taking the connection over.
func FuzzUpgradeRequest(f *testing.F) {
	f.Add("GET /ws HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
		"Origin: https://a.example\r\nSec-WebSocket-Protocol: v1, v2\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-foo\r\n\r\n")
	f.Add("GET http://b.example/ HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: x\r\nContent-Length: 3\r\n\r\nabc")
	f.Add("POST / HTTP/1.0\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\r\n")
	f.Add("GET / HTTP/1.1\r\nHost: [::1]:80\r\nOrigin: http://[::1]\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=\"10\"; client_no_context_takeover\r\n\r\n")
	opts := &Options{Subprotocols: []string{"v2", "v1"}, Compression: true, OriginPatterns: []string{"*.example", "localhost:*"}}
	f.Fuzz(func(t *testing.T, raw string) {
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return
		}
		r.RemoteAddr = "127.0.0.1:1"
		w := httptest.NewRecorder() // cannot be hijacked: Upgrade stops there
		c, err := Upgrade(w, r, opts)
		if c != nil || err == nil {
			t.Fatalf("Upgrade on a recorder returned %v, %v", c, err)
		}
		if w.Code == http.StatusSwitchingProtocols {
			t.Fatal("101 written without a connection")
		}
		for _, v := range r.Header.Values("Sec-WebSocket-Extensions") {
			if resp, p := acceptDeflate([]string{v}, len(v)%2 == 0); (resp == "") != (p == nil) {
				t.Fatalf("acceptDeflate(%q) = %q, %v", v, resp, p)
			}
		}
	})
}

// FuzzDialResponse answers Dial's handshake with any bytes. Dial must
// return, with a connection only for a valid 101, and never panic.
func FuzzDialResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n\x81\x02hi"))
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_max_window_bits=9\r\nSec-WebSocket-Protocol: v1\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope!"))
	f.Add([]byte("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n\r\n"))
	f.Fuzz(func(t *testing.T, resp []byte) {
		client, server := net.Pipe()
		defer server.Close()
		go func() {
			br := bufio.NewReader(server)
			req, err := http.ReadRequest(br)
			if err != nil {
				server.Close()
				return
			}
			out := bytes.ReplaceAll(resp, []byte("{accept}"), []byte(acceptKey(req.Header.Get("Sec-WebSocket-Key"))))
			server.Write(out)
			server.Close()
		}()
		dial := func(context.Context, string, string) (net.Conn, error) { return client, nil }
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := Dial(ctx, "ws://fuzz.example/", &Options{NetDialContext: dial, Subprotocols: []string{"v1"}, Compression: true, PingInterval: -1})
		if err == nil {
			r, perr := http.ReadResponse(bufio.NewReader(bytes.NewReader(resp)), nil)
			if perr != nil || r.StatusCode != http.StatusSwitchingProtocols || r.ProtoMajor != 1 || r.ProtoMinor < 1 {
				t.Fatalf("a connection from a %q answer", resp[:min(len(resp), 16)])
			}
			c.CloseNow()
			<-c.Done()
		}
	})
}
