package wsgate

import (
	"bytes"
	"compress/flate"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestMaskBytesMatchesNaive(t *testing.T) {
	for n := 0; n < 80; n++ {
		for pos := 0; pos < 4; pos++ {
			key := rand.Uint32()
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(rand.Uint32())
			}
			want := append([]byte(nil), b...)
			kb := [4]byte{byte(key), byte(key >> 8), byte(key >> 16), byte(key >> 24)}
			for i := range want {
				want[i] ^= kb[(pos+i)%4]
			}
			if next := maskBytes(key, pos, b); next != (pos+n)%4 {
				t.Fatalf("next position %d, want %d", next, (pos+n)%4)
			}
			if !bytes.Equal(b, want) {
				t.Fatalf("n=%d pos=%d: wrong mask", n, pos)
			}
		}
	}
}

func TestPutHeaderLengths(t *testing.T) {
	for _, n := range []int{0, 125, 126, 65535, 65536, 1 << 24} {
		var b [maxHeaderLen]byte
		h := putHeader(b[:], true, false, opBinary, n, true, 0x01020304)
		if headerLen(b[0], b[1]) != h {
			t.Fatalf("n=%d: headerLen %d, putHeader %d", n, headerLen(b[0], b[1]), h)
		}
	}
}

// The streaming validator must agree with utf8.Valid on every split of
// every sample.
func TestUTF8ValidatorAgreesWithStdlib(t *testing.T) {
	samples := [][]byte{
		[]byte("κόσμε"), []byte("\U0010FFFF"), []byte("\uFFFF\uFEFF"), []byte("plain ascii"),
		{0xC0, 0xAF}, {0xE0, 0x80, 0xAF}, {0xF0, 0x80, 0x80, 0xAF}, {0xED, 0xA0, 0x80},
		{0xF4, 0x90, 0x80, 0x80}, {0xCE, 0xBA, 0xE1}, {0x80}, {0xFE}, {0xFF}, {0xF8, 0x88, 0x80, 0x80, 0x80},
		[]byte("a\xed\x9f\xbfz"), []byte("\xef\xbf\xbd"),
	}
	for i := 0; i < 200; i++ {
		b := make([]byte, rand.IntN(12))
		for j := range b {
			b[j] = byte(rand.Uint32())
		}
		samples = append(samples, b)
	}
	for _, s := range samples {
		want := utf8.Valid(s)
		for cut1 := 0; cut1 <= len(s); cut1++ {
			for cut2 := cut1; cut2 <= len(s); cut2++ {
				var v utf8Validator
				ok := v.write(s[:cut1]) && v.write(s[cut1:cut2]) && v.write(s[cut2:]) && v.complete()
				if ok != want {
					t.Fatalf("% x split at %d,%d: got %v, want %v", s, cut1, cut2, ok, want)
				}
			}
		}
	}
}

// An invalid byte is reported in the chunk where it arrives.
func TestUTF8ValidatorFailsFast(t *testing.T) {
	var v utf8Validator
	if !v.write([]byte("ok \xce")) {
		t.Fatal("a truncated character is not an error yet")
	}
	if v.write([]byte{0x41}) {
		t.Fatal("a non-continuation byte after a lead byte must fail at once")
	}
}

func TestDeflateNegotiation(t *testing.T) {
	cases := []struct {
		offer string
		want  string // "" means declined
	}{
		{"permessage-deflate", "permessage-deflate; server_no_context_takeover; client_no_context_takeover"},
		{"permessage-deflate; client_no_context_takeover", "permessage-deflate; server_no_context_takeover; client_no_context_takeover"},
		{"permessage-deflate; server_max_window_bits=10", "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"},
		{"permessage-deflate; client_max_window_bits", "permessage-deflate; server_no_context_takeover; client_no_context_takeover"},
		{"permessage-deflate; client_max_window_bits=9", "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=9"},
		{"permessage-deflate; server_max_window_bits=7", ""},
		{"permessage-deflate; server_max_window_bits=16", ""},
		{"permessage-deflate; server_max_window_bits", ""},
		{"permessage-deflate; foo=1", ""},
		{"permessage-deflate; client_no_context_takeover; client_no_context_takeover", ""},
		{"x-webkit-deflate-frame", ""},
		{"permessage-deflate; server_max_window_bits=7, permessage-deflate", "permessage-deflate; server_no_context_takeover; client_no_context_takeover"},
		{`permessage-deflate; client_max_window_bits="10"`, "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10"},
	}
	// With ClientContextTakeover the server keeps the client's choice.
	for offer, want := range map[string]string{
		"permessage-deflate; client_max_window_bits":     "permessage-deflate; server_no_context_takeover",
		"permessage-deflate; client_no_context_takeover": "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
	} {
		if got, p := acceptDeflate([]string{offer}, true); got != want || p.clientNoContext != strings.Contains(want, "client_no") {
			t.Errorf("takeover allowed, offer %q: got %q, want %q", offer, got, want)
		}
	}
	for _, tc := range cases {
		got, _ := acceptDeflate([]string{tc.offer}, false)
		if got != tc.want {
			t.Errorf("offer %q: got %q, want %q", tc.offer, got, tc.want)
		}
	}
}

func TestDeflateRoundTrip(t *testing.T) {
	for _, huffman := range []bool{false, true} {
		d := &deflater{huffmanOnly: huffman}
		msg := bytes.Repeat([]byte("round trip "), 1000)
		z := d.compress(nil, msg)
		if len(z) >= len(msg) {
			t.Fatalf("huffman=%v: %d bytes compressed to %d", huffman, len(msg), len(z))
		}
		out, err := (&deflater{}).decompress(&Conn{}, z, -1)
		if err != nil || !bytes.Equal(out, msg) {
			t.Fatalf("huffman=%v: round trip failed: %v", huffman, err)
		}
		if _, err := (&deflater{}).decompress(&Conn{}, z, 100); err != errInflateTooBig {
			t.Fatalf("limit not enforced: %v", err)
		}
	}
}

// Inflating a message takes its output from the frame pools and its
// flate reader from a pool: once warm, the only allocation left is the
// inflater itself, however many messages a connection receives.
func TestInflateReusesBuffers(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop buffers")
	}
	msg := bytes.Repeat([]byte("pooled inflate "), 4096/15)
	z := (&deflater{}).compress(nil, msg)
	d := &deflater{}
	c := &Conn{}
	inflate := func() {
		in := d.startInflate(z, opBinary, -1)
		if done, err := in.step(c, -1); !done || err != nil {
			t.Fatalf("step: done %v, %v", done, err)
		}
		if !bytes.Equal(in.out, msg) {
			t.Fatal("inflated message differs")
		}
		in.discard()
	}
	inflate()
	if n := testing.AllocsPerRun(100, inflate); n > 1 {
		t.Errorf("%.1f allocations per inflated message, want at most 1", n)
	}
}

// A peer that keeps its compression context refers back to earlier
// messages; the deflater keeps the window to follow it.
func TestDeflateContextTakeover(t *testing.T) {
	var wire bytes.Buffer
	fw, _ := flate.NewWriter(&wire, flate.BestCompression)
	d := &deflater{inTakeover: true}
	for i, msg := range []string{"hello hello hello context", "hello hello hello context again"} {
		wire.Reset()
		fw.Write([]byte(msg))
		fw.Flush()
		z := bytes.TrimSuffix(wire.Bytes(), []byte{0, 0, 0xff, 0xff})
		out, err := d.decompress(&Conn{}, append([]byte(nil), z...), -1)
		if err != nil || string(out) != msg {
			t.Fatalf("message %d: %q, %v", i, out, err)
		}
	}
	_ = io.Discard
}

func BenchmarkMask(b *testing.B) {
	buf := make([]byte, 1024)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		maskBytes(0xdeadbeef, 1, buf)
	}
}

func BenchmarkUTF8Validator(b *testing.B) {
	buf := bytes.Repeat([]byte("κόσμε ascii "), 100)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		var v utf8Validator
		v.write(buf[:len(buf)/2+1])
		v.write(buf[len(buf)/2+1:])
	}
}

// BenchmarkParse measures the frame parser on a stream of 1 KiB masked
// text messages delivered to a no-op handler.
func BenchmarkParse(b *testing.B) {
	c := parseOnlyConn(&Options{OnMessage: func(*Conn, MessageType, []byte) {}})
	payload := bytes.Repeat([]byte("a"), 1024)
	var frame []byte
	var hb [maxHeaderLen]byte
	h := putHeader(hb[:], true, false, opText, len(payload), true, 0x11223344)
	for i := 0; i < 64; i++ {
		frame = append(frame, hb[:h]...)
		start := len(frame)
		frame = append(frame, payload...)
		maskBytes(0x11223344, 0, frame[start:])
	}
	work := make([]byte, len(frame))
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		copy(work, frame)
		c.feed(work, 0)
	}
}

// parseOnlyConn returns a server Conn with no transport, for tests that
// feed input and never write.
func parseOnlyConn(opts *Options) *Conn {
	cfg := newConfig(opts)
	c := &Conn{server: true, cfg: cfg.conn(), fd: -1, budget: cfg.Budget}
	c.readLimit.Store(cfg.readLimit)
	return c
}

// On an event loop a large compressed message is inflated a step at a
// time: after one step the connection pauses, keeping the rest of its input,
// and the loop serves other connections before it continues.
func TestInflateInSteps(t *testing.T) {
	var got [][]byte
	c := parseOnlyConn(&Options{ReadLimit: 8 << 20, OnMessage: func(_ *Conn, _ MessageType, p []byte) {
		got = append(got, append([]byte(nil), p...))
	}})
	c.fd = 1 << 20 // an event-loop connection; nothing is written in this test
	c.deflate = &deflater{}
	msg := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: four steps
	z := (&deflater{}).compress(nil, msg)
	var in []byte
	var hb [maxHeaderLen]byte
	h := putHeader(hb[:], true, true, opBinary, len(z), true, 0x01020304)
	in = append(in, hb[:h]...)
	start := len(in)
	in = append(in, z...)
	maskBytes(0x01020304, 0, in[start:])
	h = putHeader(hb[:], true, false, opText, 5, true, 0)
	in = append(in, hb[:h]...)
	in = append(in, "after"...)

	c.feed(in, 1)
	if len(got) != 0 || c.rs.inflating == nil || !c.rs.paused || c.rs.rx == nil || len(c.rs.rx.stash) != h+5 {
		t.Fatalf("after one step: %d messages, inflating %v, paused %v, kept %v", len(got), c.rs.inflating != nil, c.rs.paused, c.rs.rx)
	}
	steps := 1
	for !c.tryResume(1) {
		steps++
		if steps > 10 {
			t.Fatal("the inflation never ends")
		}
	}
	if steps != 4 {
		t.Errorf("%d steps for 1 MiB, want 4 of %d KiB", steps, inflateStep>>10)
	}
	if len(got) != 2 || !bytes.Equal(got[0], msg) || string(got[1]) != "after" {
		t.Fatalf("got %d messages", len(got))
	}
}

// Idle connections share noQueue; nothing may ever write to it.
func TestNoQueueStaysEmpty(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		Upgrade(w, r, &Options{OnMessage: func(c *Conn, typ MessageType, p []byte) {
			if len(p)%200 == 0 {
				c.Write(context.Background(), typ, p)
				return
			}
			pm, _ := NewPreparedMessage(typ, p)
			c.Enqueue(context.Background(), pm)
		}})
	}))
	defer srv.Close()
	c, err := Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		c.Write(context.Background(), BinaryMessage, make([]byte, i*100))
	}
	for range 200 {
		c.Read(context.Background())
	}
	c.Close()
	<-c.Done()
	if !reflect.DeepEqual(noQueue, sendQueue{}) {
		t.Fatalf("noQueue was written to: %+v", noQueue)
	}
}

// BenchmarkCompressionContext compares the compressed size of chat-like
// JSON pushes when the sender keeps its compression context across
// messages (context takeover) and when every message starts afresh (what
// the server asks of clients by default, so that it keeps no 32 KiB window
// per connection). It reports compressed bytes per message for each.
//
//	go test -run '^$' -bench CompressionContext .
func BenchmarkCompressionContext(b *testing.B) {
	words := strings.Fields("the quick brown fox jumps over the lazy dog while a small team builds a gateway for real time messages and every client keeps its own subscription to many channels")
	msgs := make([][]byte, 1000)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range msgs {
		var text []string
		for range 4 + r.IntN(12) {
			text = append(text, words[r.IntN(len(words))])
		}
		msgs[i] = fmt.Appendf(nil, `{"push":{"channel":"chat:room-%d","pub":{"data":{"user":"user-%d","text":%q,"ts":%d},"offset":%d}}}`,
			r.IntN(4), r.IntN(50), strings.Join(text, " "), 1764500000000+i*137, i+1)
	}
	raw := 0
	for _, m := range msgs {
		raw += len(m)
	}
	for _, takeover := range []bool{true, false} {
		name := "no-context-takeover"
		if takeover {
			name = "context-takeover"
		}
		b.Run(name, func(b *testing.B) {
			var total int
			for b.Loop() {
				total = 0
				var buf bytes.Buffer
				fw, _ := flate.NewWriter(&buf, flate.BestSpeed)
				for _, m := range msgs {
					if !takeover {
						fw.Reset(&buf)
					}
					start := buf.Len()
					fw.Write(m)
					fw.Flush()
					total += buf.Len() - start - 4 // the trailing 00 00 ff ff is not sent
				}
			}
			b.ReportMetric(float64(raw)/float64(len(msgs)), "raw-B/msg")
			b.ReportMetric(float64(total)/float64(len(msgs)), "wire-B/msg")
		})
	}
}

// decompress inflates one message at once (the read path does it in
// steps), at most limit bytes (-1: no limit), and remembers its end as the
// next message's dictionary: the tests' way into the inflater.
func (d *deflater) decompress(c *Conn, p []byte, limit int64) ([]byte, error) {
	in := d.startInflate(p, opBinary, limit)
	_, err := in.step(c, -1)
	out := in.out
	in.close()
	if err != nil {
		putOut(out)
		return nil, err
	}
	d.remember(c, out)
	return out, nil
}

// The engine gives memory back once, after enough large-buffer traffic
// and a quiet period; not while traffic goes on, not for a trickle, not
// when disabled.
func TestMemoryReleaserDue(t *testing.T) {
	const quiet = 2 * time.Second
	t0 := time.Unix(1000, 0)
	var r memoryReleaser
	taken := uint64(0)
	step := func(d time.Duration, add uint64) bool {
		t0 = t0.Add(d)
		taken += add
		return r.due(t0, taken, quiet)
	}
	if step(time.Second, releaseMin/2) || step(5*time.Second, 0) {
		t.Fatal("released after less than releaseMin")
	}
	for range 10 { // busy: never while buffers are being taken
		if step(time.Second, releaseMin) {
			t.Fatal("released during traffic")
		}
	}
	if step(time.Second, 0) {
		t.Fatal("released before the quiet period")
	}
	if !step(time.Second, 0) {
		t.Fatal("not released after the quiet period")
	}
	released := t0
	if step(time.Second, 0) {
		t.Fatal("released twice for one burst")
	}
	// The next burst: not released within releaseSpacing of the last release.
	step(time.Second, 2*releaseMin)
	for t0.Sub(released) < releaseSpacing*quiet-time.Second {
		if step(time.Second, 0) {
			t.Fatalf("released %v after the last release", t0.Sub(released))
		}
	}
	if !step(2*time.Second, 0) {
		t.Fatal("not released after releaseSpacing")
	}
	step(time.Second, 2*releaseMin)
	if r.due(t0.Add(time.Hour), taken, 0) {
		t.Fatal("released while disabled")
	}
}
