package wsgate_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate"
)

// BenchmarkIdleServerConn measures the Go heap an idle event-driven server
// connection holds, with and without a burst of traffic that needed
// reassembly first. The clients run in a child process, so only the
// server's side is counted. b.N is ignored: it reports heap bytes per
// connection for 2,000 connections.
//
//	go test -run '^$' -bench IdleServerConn -benchtime 1x .
func BenchmarkIdleServerConn(b *testing.B) {
	for _, traffic := range []bool{false, true} {
		name := "never-used"
		if traffic {
			name = "after-traffic"
		}
		b.Run(name, func(b *testing.B) { benchIdle(b, traffic) })
	}
}

func benchIdle(b *testing.B, traffic bool) {
	const n = 2000
	var (
		mu    sync.Mutex
		conns []*wsgate.Conn
	)
	up, err := wsgate.NewUpgrader(&wsgate.Options{ReadLimit: 64 << 10, OnMessage: func(c *wsgate.Conn, typ wsgate.MessageType, p []byte) {
		c.Write(b.Context(), typ, p)
	}})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r)
		if err != nil {
			return
		}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	// A warm-up connection starts the engine and fills the pools.
	warm := exec.Command(os.Args[0], "-test.run=^TestIdleClientChild$")
	warm.Env = append(os.Environ(), "WSGATE_IDLE_CHILD="+host, "WSGATE_IDLE_N=1", "WSGATE_IDLE_TRAFFIC="+strconv.FormatBool(traffic))
	if out, err := warm.CombinedOutput(); err != nil {
		b.Fatalf("warm-up: %v\n%s", err, out)
	}

	runtime.GC()
	debug.FreeOSMemory()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	mu.Lock()
	base := len(conns)
	mu.Unlock()

	child := exec.Command(os.Args[0], "-test.run=^TestIdleClientChild$")
	child.Env = append(os.Environ(), "WSGATE_IDLE_CHILD="+host, "WSGATE_IDLE_N="+strconv.Itoa(n), "WSGATE_IDLE_TRAFFIC="+strconv.FormatBool(traffic))
	stdin, _ := child.StdinPipe()
	stdout, _ := child.StdoutPipe()
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stdin.Close()
		child.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		b.Fatalf("child: %q %v", line, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		got := len(conns) - base
		mu.Unlock()
		if got == n {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d connections", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the last echoes leave
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/n, "heap-B/conn")
	b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/n, "inuse-B/conn")
	mu.Lock()
	for _, c := range conns {
		c.CloseNow()
	}
	mu.Unlock()
	for _, c := range conns {
		<-c.Done()
	}
}

// TestIdleClientChild is the client side of BenchmarkIdleServerConn, run
// in a child process: it opens WSGATE_IDLE_N raw connections, optionally
// sends each a fragmented message split across writes and reads the echo,
// says "ready", and holds them until its stdin closes.
func TestIdleClientChild(t *testing.T) {
	host := os.Getenv("WSGATE_IDLE_CHILD")
	if host == "" {
		t.Skip("child process of BenchmarkIdleServerConn")
	}
	n, _ := strconv.Atoi(os.Getenv("WSGATE_IDLE_N"))
	traffic := os.Getenv("WSGATE_IDLE_TRAFFIC") == "true"
	var ncs []net.Conn
	for i := range n {
		nc, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		fmt.Fprintf(nc, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", host)
		br := bufio.NewReader(nc)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("handshake %d: %v", i, err)
		}
		if traffic {
			// 32 KiB in 4 fragments, each written in two parts: the server
			// reassembles it across reads, then echoes it.
			msg := strings.Repeat("x", 8<<10)
			for f := range 4 {
				op := byte(0x0)
				if f == 0 {
					op = 0x2
				}
				fr := frame(f == 3, op, []byte(msg))
				nc.Write(fr[:len(fr)/2])
				time.Sleep(time.Millisecond)
				nc.Write(fr[len(fr)/2:])
			}
			buf := make([]byte, 64<<10)
			got := 0
			for got < 32<<10+4 {
				k, err := br.Read(buf)
				if err != nil {
					t.Fatalf("echo %d: %v", i, err)
				}
				got += k
			}
		}
		ncs = append(ncs, nc)
	}
	fmt.Println("ready")
	os.Stdin.Read(make([]byte, 1))
	for _, nc := range ncs {
		nc.Close()
	}
}
