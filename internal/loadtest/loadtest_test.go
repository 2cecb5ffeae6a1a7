package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// echoServer starts an in-process wsgate echo server on 127.0.0.1 that
// greets every connection with a "heartbeat" text message, as the
// tutorial's server does, and returns its ws:// URL.
func echoServer(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := wsgate.Upgrade(w, r, &wsgate.Options{
			PingInterval: -1,
			OnMessage: func(c *wsgate.Conn, typ wsgate.MessageType, data []byte) {
				c.Write(context.Background(), typ, data)
			},
		})
		if err != nil {
			return
		}
		c.Write(context.Background(), wsgate.TextMessage, []byte("heartbeat"))
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}

func run(t *testing.T, cfg Config) *Report {
	t.Helper()
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var b strings.Builder
	rep.WriteText(&b)
	t.Log("\n" + b.String())
	return rep
}

func noErrors(t *testing.T, rep *Report) {
	t.Helper()
	if rep.ErrorCount != 0 {
		t.Errorf("errors: %+v", rep.Errors)
	}
}

func TestEchoText(t *testing.T) {
	rep := run(t, Config{
		Mode: ModeEcho, URL: echoServer(t), Conns: 4, Inflight: 3, Size: 64,
		Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond, PID: os.Getpid(),
	})
	noErrors(t, rep)
	if rep.Established != 4 || rep.Messages == 0 || rep.Latency == nil || rep.MsgsPerSec <= 0 {
		t.Errorf("established %d, messages %d, latency %v, rate %v", rep.Established, rep.Messages, rep.Latency, rep.MsgsPerSec)
	}
	if rep.Ignored == 0 {
		t.Errorf("the heartbeats were not counted as ignored")
	}
	if rep.Server == nil || rep.Server.RSSAfterKiB == 0 {
		t.Errorf("no server stats: %+v", rep.Server)
	}
}

func TestEchoBinaryCount(t *testing.T) {
	rep := run(t, Config{Mode: ModeEcho, URL: echoServer(t), Conns: 3, Size: 200, Binary: true, Count: 500})
	noErrors(t, rep)
	if rep.Messages != 500 {
		t.Errorf("measured %d replies, want 500", rep.Messages)
	}
	if rep.Latency == nil || rep.Latency.Count != rep.Messages && rep.Latency.Count < 500 {
		t.Errorf("latency %+v", rep.Latency)
	}
}

func TestIdle(t *testing.T) {
	rep := run(t, Config{Mode: ModeIdle, URL: echoServer(t), N: 30, Rate: 1000, Hold: 100 * time.Millisecond, PID: os.Getpid()})
	noErrors(t, rep)
	if rep.Established != 30 || rep.Held != 30 {
		t.Errorf("established %d, held %d, want 30", rep.Established, rep.Held)
	}
	if rep.Server == nil || rep.Server.RSSBeforeKiB == 0 {
		t.Errorf("no RSS: %+v", rep.Server)
	}
}

func TestConnect(t *testing.T) {
	rep := run(t, Config{Mode: ModeConnect, URL: echoServer(t), Conns: 2, Duration: 300 * time.Millisecond, Binary: true})
	noErrors(t, rep)
	if rep.Messages == 0 || rep.ConnectsPerSec <= 0 || rep.Handshake == nil {
		t.Errorf("cycles %d, rate %v, handshake %v", rep.Messages, rep.ConnectsPerSec, rep.Handshake)
	}
}

func TestSlow(t *testing.T) {
	rep := run(t, Config{
		Mode: ModeSlow, URL: echoServer(t), Conns: 2, Slow: 2, SlowRate: 5000, Size: 4096, Binary: true,
		Duration: 500 * time.Millisecond,
	})
	noErrors(t, rep)
	if rep.Slow == nil || rep.Slow.Clients != 2 || rep.Slow.Sent == 0 {
		t.Errorf("slow report %+v", rep.Slow)
	}
	if rep.Messages == 0 {
		t.Errorf("the normal clients got no replies")
	}
}

// tcpEcho starts a plain TCP echo server and returns its address.
func tcpEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func TestRaw(t *testing.T) {
	rep := run(t, Config{Mode: ModeEcho, Raw: true, URL: "ws://" + tcpEcho(t) + "/", Conns: 3, Inflight: 4, Size: 300, Count: 2000})
	noErrors(t, rep)
	if rep.Messages != 2000 || rep.Latency == nil {
		t.Errorf("messages %d, latency %v", rep.Messages, rep.Latency)
	}
}

func TestRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"echo", "-c", "2", "-duration", "100ms", "ws://" + addr + "/ws"}, &out, &errOut)
	if code != ExitTooManyErrs {
		t.Errorf("exit status %d, want %d\n%s%s", code, ExitTooManyErrs, &out, &errOut)
	}
	if !strings.Contains(out.String(), "dial: connection refused") {
		t.Errorf("summary does not name the refused dials:\n%s", &out)
	}
}

func TestMainJSON(t *testing.T) {
	url := echoServer(t)
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"echo", url, "-c", "2", "-count", "100", "-json", "-label", "inproc"}, &out, &errOut)
	if code != ExitOK {
		t.Fatalf("exit status %d\n%s", code, &errOut)
	}
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("decoding %q: %v", out.String(), err)
	}
	if rep.Label != "inproc" || rep.Messages != 100 || rep.Latency == nil {
		t.Errorf("report %+v", rep)
	}
	if !strings.Contains(errOut.String(), "throughput") {
		t.Errorf("no summary on stderr: %s", &errOut)
	}
}

func TestInterrupted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	rep, err := Run(ctx, Config{Mode: ModeEcho, URL: echoServer(t), Conns: 2, Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Interrupted || rep.Messages == 0 {
		t.Errorf("interrupted %v, messages %d", rep.Interrupted, rep.Messages)
	}
	noErrors(t, rep)
}

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // substring of the error; "" for success
	}{
		{[]string{"echo", "-c", "5", "ws://h:1/ws", "-size", "100"}, ""},
		{[]string{"idle", "-n", "10", "ws://h:1/ws"}, ""},
		{[]string{"broadcast", "ws://h:1/ws"}, "unknown mode"},
		{[]string{"echo"}, "exactly one URL"},
		{[]string{"echo", "ws://a/", "ws://b/"}, "exactly one URL"},
		{[]string{"-c", "3", "echo", "ws://h:1/"}, "mode comes first"},
		{[]string{"echo", "-size", "10", "ws://h:1/"}, "too small"},
		{[]string{"echo", "-size", "10", "-raw", "ws://h:1/"}, ""},
		{[]string{"echo", "http://h:1/"}, "scheme"},
		{[]string{"slow", "ws://h:1/"}, "-slow"},
		{[]string{"idle", "-raw", "ws://h:1/"}, "-raw only"},
	} {
		cfg, _, err := parseArgs(tc.args, io.Discard)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: error %v, want one containing %q", tc.args, err, tc.want)
		}
		if tc.want == "" && tc.args[0] == "echo" && tc.args[2] == "5" && (cfg.Conns != 5 || cfg.Size != 100) {
			t.Errorf("%q parsed as %+v", tc.args, cfg)
		}
	}
	if _, _, err := parseArgs([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

func TestStamp(t *testing.T) {
	for _, bin := range []bool{false, true} {
		p := newPayload(64)
		stamp(p, bin, 0xDEADBEEF, 1234567890123)
		seq, ts, ok := unstamp(p, bin, 64)
		if !ok || seq != 0xDEADBEEF || ts != 1234567890123 {
			t.Errorf("binary=%v: got %x %d %v", bin, seq, ts, ok)
		}
		if _, _, ok := unstamp([]byte("heartbeat"), bin, 64); ok {
			t.Errorf("binary=%v: heartbeat taken for a reply", bin)
		}
	}
}

// deflateEchoServer is echoServer with permessage-deflate on (or off) and
// clients allowed to keep their compression context, like a browser's.
func deflateEchoServer(t *testing.T, compression bool) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := wsgate.Upgrade(w, r, &wsgate.Options{
			PingInterval:          -1,
			Compression:           compression,
			ClientContextTakeover: true,
			ReadLimit:             -1,
			OnMessage: func(c *wsgate.Conn, typ wsgate.MessageType, data []byte) {
				c.Write(context.Background(), typ, data)
			},
		})
		if err != nil {
			return
		}
		c.Write(context.Background(), wsgate.TextMessage, []byte("heartbeat"))
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}

func TestIdleTraffic(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		compress, compression bool
		agreed                string
	}{
		{"plain", false, false, "offered: false, agreed on 0"},
		{"deflate", true, true, "offered: true, agreed on 12"},
		{"refused", true, false, "offered: true, agreed on 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := run(t, Config{
				Mode: ModeIdle, URL: deflateEchoServer(t, tc.compression), N: 12, Rate: 1000, Hold: 100 * time.Millisecond,
				Traffic: 2, Size: 40000, Fragments: 3, Compress: tc.compress, PID: os.Getpid(),
			})
			noErrors(t, rep)
			if rep.Established != 12 || rep.Held != 12 {
				t.Errorf("established %d, held %d, want 12", rep.Established, rep.Held)
			}
			if len(rep.Notes) == 0 || !strings.Contains(rep.Notes[0], tc.agreed) {
				t.Errorf("notes %q, want %q", rep.Notes, tc.agreed)
			}
		})
	}
}

func TestIdleTrafficServerCloses(t *testing.T) {
	// A server that takes no message over 1 KiB closes every connection
	// during the traffic: each one is an error, none is held.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wsgate.Upgrade(w, r, &wsgate.Options{PingInterval: -1, ReadLimit: 1024})
	}))
	t.Cleanup(srv.Close)
	rep, err := Run(context.Background(), Config{
		Mode: ModeIdle, URL: "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws", N: 5, Rate: 1000,
		Hold: 50 * time.Millisecond, Traffic: 1, Size: 4096,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Held != 0 || rep.ErrorCount != 5 {
		t.Errorf("held %d, errors %d (%+v), want 0 and 5", rep.Held, rep.ErrorCount, rep.Errors)
	}
}

func TestFragmentFrames(t *testing.T) {
	wire := bytes.Repeat([]byte("x"), 1000)
	for _, n := range []int{1, 3, 4, 1000, 5000} {
		frames := fragmentFrames(wire, true, true, n)
		total := 0
		for i, f := range frames {
			fin, rsv1, op := f[0]&0x80 != 0, f[0]&0x40 != 0, f[0]&0x0f
			if fin != (i == len(frames)-1) || rsv1 != (i == 0) || (op == 2) != (i == 0) || (i > 0 && op != 0) {
				t.Errorf("n=%d frame %d: header %08b", n, i, f[0])
			}
			hdr := 2 + 4
			switch f[1] & 0x7f {
			case 126:
				hdr += 2
			case 127:
				hdr += 8
			}
			total += len(f) - hdr
		}
		if total != len(wire) || len(frames) != min(n, len(wire)) {
			t.Errorf("n=%d: %d frames carrying %d bytes", n, len(frames), total)
		}
	}
}
