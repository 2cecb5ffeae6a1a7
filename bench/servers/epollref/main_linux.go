//go:build linux

// Command epollref is the reference ceiling: a minimal WebSocket echo on one
// epoll loop, with no per-connection goroutine and no buffer held by an idle
// connection.
//
// It is not a conforming server: it trusts the handshake beyond the key,
// does not validate UTF-8 and echoes fragmented messages frame by frame. It
// shows how fast a single core can answer, not how a library should behave.
package main

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"flag"
	"log"
	"strings"

	"github.com/wsgate/wsgate/bench/internal/eloop"
)

const (
	stateHandshake = 0
	stateOpen      = 1
	maxPayload     = 16 << 20
	maxRequest     = 8 << 10
)

// scratch collects the replies to one read so they leave in one write.
var scratch = make([]byte, 0, 128<<10)

func main() {
	addr := flag.String("addr", "127.0.0.1:9005", "listen address (IPv4 host:port)")
	flag.Parse()
	srv, err := eloop.Listen(*addr, handle)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("epollref: echo on ws://%s/ws", *addr)
	log.Fatal(srv.Run())
}

func handle(c *eloop.Conn, in []byte) int {
	used := 0
	if c.State == stateHandshake {
		used = handshake(c, in)
		if c.State == stateHandshake {
			return used
		}
	}
	out := scratch[:0]
	for {
		n, reply, closing := frame(in[used:], out)
		if n == 0 {
			break
		}
		used += n
		out = reply
		if closing {
			c.Send(out)
			c.Close()
			scratch = out[:0]
			return used
		}
	}
	if len(out) > 0 {
		c.Send(out)
	}
	scratch = out[:0]
	return used
}

// handshake answers the HTTP upgrade once the request is complete.
func handshake(c *eloop.Conn, in []byte) int {
	end := strings.Index(string(in), "\r\n\r\n")
	if end < 0 {
		if len(in) > maxRequest {
			c.Close()
			return len(in)
		}
		return 0
	}
	req := string(in[:end])
	key := ""
	for _, line := range strings.Split(req, "\r\n")[1:] {
		name, value, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(name), "Sec-WebSocket-Key") {
			key = strings.TrimSpace(value)
		}
	}
	if !strings.HasPrefix(req, "GET ") || key == "" {
		c.Send([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
		c.Close()
		return len(in)
	}
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	c.Send([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		base64.StdEncoding.EncodeToString(h[:]) + "\r\n\r\n"))
	c.State = stateOpen
	return end + 4
}

// frame parses one complete client frame from in and appends the answer
// to out. n is 0 when in holds no complete frame.
func frame(in, out []byte) (n int, reply []byte, closing bool) {
	if len(in) < 2 {
		return 0, out, false
	}
	b0, b1 := in[0], in[1]
	op := b0 & 0x0F
	hl := 2
	size := int(b1 & 0x7F)
	switch size {
	case 126:
		hl = 4
		if len(in) < hl {
			return 0, out, false
		}
		size = int(binary.BigEndian.Uint16(in[2:]))
	case 127:
		hl = 10
		if len(in) < hl {
			return 0, out, false
		}
		v := binary.BigEndian.Uint64(in[2:])
		if v > maxPayload {
			return len(in), out, true
		}
		size = int(v)
	}
	if b1&0x80 == 0 {
		return len(in), out, true // clients must mask
	}
	if len(in) < hl+4 {
		return 0, out, false
	}
	key := in[hl : hl+4 : hl+4]
	hl += 4
	if len(in) < hl+size {
		return 0, out, false
	}
	payload := in[hl : hl+size]
	switch op {
	case 0x9: // ping → pong
		out = appendFrame(out, 0x80|0xA, key, payload)
	case 0xA: // pong: nothing to do
	case 0x8: // close: echo the status, then hang up
		if len(payload) > 2 {
			payload = payload[:2]
		}
		return hl + size, appendFrame(out, 0x80|0x8, key, payload), true
	default: // data and continuation frames: echo as they came
		out = appendFrame(out, b0&0x8F, key, payload)
	}
	return hl + size, out, false
}

// appendFrame appends an unmasked server frame whose payload is the
// unmasked form of the masked payload p.
func appendFrame(out []byte, b0 byte, key, p []byte) []byte {
	n := len(p)
	switch {
	case n < 126:
		out = append(out, b0, byte(n))
	case n <= 0xFFFF:
		out = append(out, b0, 126, byte(n>>8), byte(n))
	default:
		out = append(out, b0, 127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	start := len(out)
	out = append(out, p...)
	unmask(out[start:], key)
	return out
}

// unmask XORs b with the 4-byte key, eight bytes at a time.
func unmask(b, key []byte) {
	k4 := binary.LittleEndian.Uint32(key)
	k8 := uint64(k4) | uint64(k4)<<32
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^k8)
	}
	for ; i < len(b); i++ {
		b[i] ^= key[i&3]
	}
}
