package loadtest

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The idle mode's -traffic and -compress connections are driven by hand
// over plain TCP rather than by wsgate's client, so that what the server
// receives is exactly what the measurement needs: messages split into
// fragments and each fragment into pieces written apart (the server has to
// reassemble across reads), and a permessage-deflate offer like a
// browser's, which lets the client keep its compression context
// (client_max_window_bits, no client_no_context_takeover). After the
// traffic nothing of it is kept on the generator's side but the socket.

// trafficPieceGap is the pause between the two halves of every frame, so
// that they reach the server in separate reads.
const trafficPieceGap = 2 * time.Millisecond

// errTrafficReply is the error of a connection whose echo did not come.
var errTrafficReply = errors.New("no echo of the message sent among the messages received")

// trafficConn opens one connection by hand, offers permessage-deflate when
// compress is set, sends cfg.Traffic messages of cfg.Size bytes in
// cfg.Fragments fragments each, waits for each echo and returns the socket,
// left idle.
func trafficConn(ctx context.Context, d *dialer, u *url.URL, cfg *Config) (net.Conn, bool, error) {
	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	nc, err := d.dialContext(dctx, "tcp", hostPort(u))
	if err != nil {
		return nil, false, err
	}
	deadline, _ := dctx.Deadline()
	if cfg.Traffic > 0 {
		// Each message takes a pause per fragment; allow for them.
		deadline = deadline.Add(time.Duration(cfg.Traffic*cfg.Fragments) * 2 * trafficPieceGap)
	}
	nc.SetDeadline(deadline)
	deflate, br, err := trafficHandshake(nc, u, cfg.Compress)
	if err == nil {
		err = trafficExchange(nc, br, cfg, deflate)
	}
	if err != nil {
		nc.Close()
		return nil, false, err
	}
	nc.SetDeadline(time.Time{})
	return nc, deflate, nil
}

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// trafficHandshake sends the opening handshake and reads the answer; it
// reports whether permessage-deflate was agreed.
func trafficHandshake(nc net.Conn, u *url.URL, compress bool) (bool, *bufio.Reader, error) {
	var key [16]byte
	rand.Read(key[:])
	path := u.RequestURI()
	var b strings.Builder
	b.WriteString("GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
	b.WriteString("Sec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key[:]) + "\r\nSec-WebSocket-Version: 13\r\n")
	if compress {
		// What Chrome and Firefox send.
		b.WriteString("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(nc, b.String()); err != nil {
		return false, nil, fmt.Errorf("handshake: %w", err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		return false, nil, fmt.Errorf("handshake: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return false, nil, fmt.Errorf("handshake: status %s", resp.Status)
	}
	ext := strings.ToLower(resp.Header.Get("Sec-WebSocket-Extensions"))
	// Whether or not the server asked for client_no_context_takeover, the
	// client below compresses every message on its own, which is valid
	// either way.
	return compress && strings.Contains(ext, "permessage-deflate"), br, nil
}

// trafficExchange sends the messages and checks their echoes.
func trafficExchange(nc net.Conn, br *bufio.Reader, cfg *Config, deflate bool) error {
	payload := newPayload(cfg.Size)
	wire := payload
	if deflate {
		wire = compressMessage(payload)
	}
	frames := fragmentFrames(wire, cfg.Binary, deflate, cfg.Fragments)
	var window []byte // the server's compression context, if it keeps one
	for range cfg.Traffic {
		for _, f := range frames {
			half := len(f) / 2
			if _, err := nc.Write(f[:half]); err != nil {
				return err
			}
			time.Sleep(trafficPieceGap)
			if _, err := nc.Write(f[half:]); err != nil {
				return err
			}
		}
		// Other messages (a greeting, a heartbeat) are skipped, a bounded
		// number of them.
		for skipped := 0; ; skipped++ {
			got, err := readEcho(nc, br, &window)
			if err != nil {
				return err
			}
			if bytes.Equal(got, payload) {
				break
			}
			if skipped == maxSkipped {
				return errTrafficReply
			}
		}
	}
	return nil
}

// maxSkipped is how many other messages may come before an echo.
const maxSkipped = 100

// compressMessage deflates a message as RFC 7692 puts it on the wire: a
// raw DEFLATE stream, sync-flushed, without the final 00 00 ff ff.
func compressMessage(p []byte) []byte {
	var buf bytes.Buffer
	zw, _ := flate.NewWriter(&buf, flate.BestSpeed)
	zw.Write(p)
	zw.Flush()
	return bytes.TrimSuffix(buf.Bytes(), []byte{0, 0, 0xff, 0xff})
}

// fragmentFrames splits a message into n masked client frames.
func fragmentFrames(wire []byte, bin, compressed bool, n int) [][]byte {
	n = max(1, min(n, len(wire)))
	var frames [][]byte
	step := (len(wire) + n - 1) / max(n, 1)
	for i := 0; i < n || len(frames) == 0; i++ {
		lo, hi := min(i*step, len(wire)), min((i+1)*step, len(wire))
		if lo == hi && i > 0 {
			break
		}
		op := byte(0) // continuation
		if i == 0 {
			op = 0x1
			if bin {
				op = 0x2
			}
		}
		b0 := op
		if hi == len(wire) {
			b0 |= 0x80
		}
		if i == 0 && compressed {
			b0 |= 0x40
		}
		frames = append(frames, maskedFrame(b0, wire[lo:hi]))
	}
	return frames
}

func maskedFrame(b0 byte, p []byte) []byte {
	f := []byte{b0}
	switch n := len(p); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n <= 0xFFFF:
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	default:
		f = append(f, 0x80|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	var key [4]byte
	rand.Read(key[:])
	f = append(f, key[:]...)
	for i, c := range p {
		f = append(f, c^key[i&3])
	}
	return f
}

// readEcho reads frames up to the end of the next data message and
// returns its payload, inflated if it was compressed. Pings are answered;
// window carries the server's compression context between messages.
func readEcho(nc net.Conn, br *bufio.Reader, window *[]byte) ([]byte, error) {
	var msg []byte
	compressed, started := false, false
	for {
		var h [2]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return nil, err
		}
		fin, op := h[0]&0x80 != 0, h[0]&0x0f
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var e [2]byte
			if _, err := io.ReadFull(br, e[:]); err != nil {
				return nil, err
			}
			n = uint64(binary.BigEndian.Uint16(e[:]))
		case 127:
			var e [8]byte
			if _, err := io.ReadFull(br, e[:]); err != nil {
				return nil, err
			}
			n = binary.BigEndian.Uint64(e[:])
		}
		if n > 64<<20 {
			return nil, fmt.Errorf("frame of %d bytes", n)
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(br, p); err != nil {
			return nil, err
		}
		switch op {
		case 0x8:
			return nil, fmt.Errorf("the server closed the connection: % x", p)
		case 0x9:
			if _, err := nc.Write(maskedFrame(0x8A, p)); err != nil {
				return nil, err
			}
			continue
		case 0xA:
			continue
		case 0x1, 0x2:
			started, compressed = true, h[0]&0x40 != 0
		case 0x0:
			if !started {
				return nil, errors.New("continuation frame without a message")
			}
		}
		msg = append(msg, p...)
		if !fin {
			continue
		}
		if !compressed {
			return msg, nil
		}
		zr := flate.NewReaderDict(io.MultiReader(bytes.NewReader(msg), bytes.NewReader([]byte{0, 0, 0xff, 0xff})), *window)
		out, err := io.ReadAll(zr)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("inflate: %w", err)
		}
		*window = append(*window, out...)
		if len(*window) > 32<<10 {
			*window = append([]byte(nil), (*window)[len(*window)-32<<10:]...)
		}
		return out, nil
	}
}
