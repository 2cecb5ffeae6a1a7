package wsgate_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate"
)

// A process out of file descriptors refuses an upgrade with 503 before the
// 101 (both when the socket cannot be duplicated and when the event loops
// cannot start), and goes on serving once descriptors are free again. It
// runs in a child process, whose descriptor limit it lowers.
func TestOutOfDescriptors(t *testing.T) {
	if os.Getenv("WSGATE_TEST_EMFILE") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestOutOfDescriptors$", "-test.v")
		cmd.Env = append(os.Environ(), "WSGATE_TEST_EMFILE=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestOutOfDescriptors") {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	lim := syscall.Rlimit{Cur: 256, Max: 256}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ping" {
			fmt.Fprintln(w, "pong")
			return
		}
		c, err := wsgate.Upgrade(w, r, &wsgate.Options{OnMessage: func(c *wsgate.Conn, typ wsgate.MessageType, p []byte) {
			c.Write(r.Context(), typ, p)
		}})
		if err != nil {
			errs <- err
			return
		}
		errs <- nil
		_ = c
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	// connect opens a connection the server has accepted, before the
	// descriptors run out.
	connect := func() (net.Conn, *bufio.Reader) {
		nc, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		br := bufio.NewReader(nc)
		fmt.Fprintf(nc, "GET /ping HTTP/1.1\r\nHost: %s\r\n\r\n", host)
		nc.SetReadDeadline(time.Now().Add(waitLimit))
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("ping: %v %v", resp, err)
		}
		resp.Body.Close()
		return nc, br
	}
	upgrade := func(nc net.Conn, br *bufio.Reader) int {
		fmt.Fprintf(nc, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", host)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("upgrade: %v", err)
		}
		return resp.StatusCode
	}
	exhaust := func() []*os.File {
		var files []*os.File
		for {
			f, err := os.Open(os.DevNull)
			if err != nil {
				return files
			}
			files = append(files, f)
		}
	}
	release := func(files []*os.File) {
		for _, f := range files {
			f.Close()
		}
	}

	for _, free := range []int{0, 1} { // no descriptor to duplicate; one, but none for the loops
		nc, br := connect()
		files := exhaust()
		release(files[:free])
		if code := upgrade(nc, br); code != http.StatusServiceUnavailable {
			t.Fatalf("%d free descriptors: status %d, want 503", free, code)
		}
		if err := <-errs; !errors.Is(err, wsgate.ErrEngine) {
			t.Fatalf("Upgrade returned %v, want ErrEngine", err)
		}
		release(files[free:])
	}
	time.Sleep(100 * time.Millisecond) // the engine's goroutines would have run by now

	// Descriptors are back: connections work again.
	c := dial(t, "ws://"+host+"/", nil)
	write(t, c, wsgate.TextMessage, []byte("again"))
	if _, p := read(t, c); string(p) != "again" {
		t.Fatalf("got %q", p)
	}
}
