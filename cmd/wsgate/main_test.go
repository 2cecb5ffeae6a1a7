package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate/hub"
	"github.com/wsgate/wsgate/internal/server"
)

// runMainEnv makes the test binary run main instead of the tests, so that
// the signal handling can be tested on a real process.
const runMainEnv = "GO_TEST_WSGATE_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// env returns a getenv over a fixed map.
func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// defaultConfig is the effective configuration without any setting.
func defaultConfig() server.Config {
	return server.Config{
		Addr:             "0.0.0.0:5555",
		Version:          buildVersion(),
		Heartbeat:        time.Second,
		MaxConns:         10000,
		MaxMessageSize:   64 << 10,
		MemoryBudget:     4 << 30,
		HandshakeTimeout: 10 * time.Second,
		ShutdownTimeout:  10 * time.Second,
		PingInterval:     20 * time.Second,
		PingTimeout:      10 * time.Second,
		AllowOrigins:     []string{},
		AllowedHosts:     []string{"*"},
		ReadTimeout:      15 * time.Second,
		WriteTimeout:     15 * time.Second,
		IdleTimeout:      time.Minute,
		MaxHeaderBytes:   32 << 10,
		MaxHTTPConns:     1024,
		MemoryRelease:    2 * time.Second,
		Channels: &hub.ChannelConfig{
			Default:           hub.ChannelOptions{AllowSubscribeForClient: true},
			Namespaces:        []hub.Namespace{},
			PrivatePrefix:     "$",
			NamespaceBoundary: ":",
			MaxLength:         255,
		},
	}
}

// effective returns o with its server config replaced by the effective one.
func effective(t *testing.T, o options) options {
	t.Helper()
	c, err := o.server.Effective()
	if err != nil {
		t.Fatalf("Effective: %v", err)
	}
	o.server = c
	return o
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		getenv func(string) string
		change func(*options) // applied to the defaults
	}{
		{"defaults", nil, env(), func(*options) {}},
		{"flag", []string{"-addr", "127.0.0.1:8080"}, env(), func(o *options) {
			o.server.Addr = "127.0.0.1:8080"
			o.server.AllowedHosts = []string{"localhost", "127.0.0.1", "[::1]"}
		}},
		{"env", nil, env("WSGATE_ADDR", ":9000"), func(o *options) { o.server.Addr = ":9000" }},
		{"flag wins over env", []string{"-addr=:2"}, env("WSGATE_ADDR", ":1"), func(o *options) { o.server.Addr = ":2" }},
		{"heartbeat", []string{"-heartbeat=250ms"}, env(), func(o *options) { o.server.Heartbeat = 250 * time.Millisecond }},
		{"heartbeat 0 disables", []string{"-heartbeat=0"}, env(), func(o *options) { o.server.Heartbeat = -1 }},
		{"heartbeat 0 from env", nil, env("WSGATE_HEARTBEAT", "0s"), func(o *options) { o.server.Heartbeat = -1 }},
		{"ping interval 0 disables", []string{"-ping-interval=0"}, env(), func(o *options) { o.server.PingInterval = -1 }},
		{"ping timeout", []string{"-ping-timeout=3s"}, env(), func(o *options) { o.server.PingTimeout = 3 * time.Second }},
		{"allow origin list", []string{"-allow-origin", " a.example.com, *.b.example ,"}, env(),
			func(o *options) { o.server.AllowOrigins = []string{"a.example.com", "*.b.example"} }},
		{"allow all origins from env", nil, env("WSGATE_ALLOW_ORIGIN", "*"), func(o *options) { o.server.AllowOrigins = []string{"*"} }},
		{"max conns", []string{"-max-conns=2"}, env(), func(o *options) { o.server.MaxConns = 2 }},
		{"max conns 0 is unlimited", nil, env("WSGATE_MAX_CONNS", "0"), func(o *options) { o.server.MaxConns = -1 }},
		{"max message size", []string{"-max-message-size=1024"}, env(), func(o *options) { o.server.MaxMessageSize = 1024 }},
		{"memory budget", nil, env("WSGATE_MEMORY_BUDGET", "1048576"), func(o *options) { o.server.MemoryBudget = 1 << 20 }},
		{"no memory budget", []string{"-memory-budget=-1"}, env(), func(o *options) { o.server.MemoryBudget = -1 }},
		{"timeouts", []string{"-handshake-timeout=1s", "-shutdown-timeout=2s"}, env(),
			func(o *options) { o.server.HandshakeTimeout, o.server.ShutdownTimeout = time.Second, 2*time.Second }},
		{"compression from env", nil, env("WSGATE_COMPRESSION", "true"), func(o *options) { o.server.Compression = true }},
		{"event loops from env", nil, env("WSGATE_EVENT_LOOPS", "3"), func(o *options) { o.server.EventLoops = 3 }},
		{"event loops flag wins", []string{"-event-loops=1"}, env("WSGATE_EVENT_LOOPS", "3"), func(o *options) { o.server.EventLoops = 1 }},
		{"memory release from env", nil, env("WSGATE_MEMORY_RELEASE", "10s"), func(o *options) { o.server.MemoryRelease = 10 * time.Second }},
		{"memory release off", []string{"-memory-release=0"}, env(), func(o *options) { o.server.MemoryRelease = -1 }},
		{"compression flag off wins", []string{"-compression=false"}, env("WSGATE_COMPRESSION", "1"), func(*options) {}},
		{"json logs at debug", []string{"-log-format=json"}, env("WSGATE_LOG_LEVEL", "debug"),
			func(o *options) { o.logFormat, o.logLevel = "json", slog.LevelDebug }},
		{"log level warn", []string{"-log-level=WARN"}, env(), func(o *options) { o.logLevel = slog.LevelWarn }},
		{"version", []string{"-version"}, env(), func(o *options) { o.showVersion = true }},
		{"version is not read from env", nil, env("WSGATE_VERSION", "true"), func(*options) {}},
		{"print config", []string{"-print-config"}, env(), func(o *options) { o.printConfig = true }},
		{"print config is not read from env", nil, env("WSGATE_PRINT_CONFIG", "true"), func(*options) {}},
		{"allowed hosts", []string{"-allowed-hosts", "ws.example.com, [::1]:5555"}, env(),
			func(o *options) { o.server.AllowedHosts = []string{"ws.example.com", "[::1]:5555"} }},
		{"allowed hosts from env", nil, env("WSGATE_ALLOWED_HOSTS", "*.example.com"),
			func(o *options) { o.server.AllowedHosts = []string{"*.example.com"} }},
		{"http limits", []string{"-read-timeout=20s", "-write-timeout=5s", "-idle-timeout=2m", "-max-header-bytes=8192", "-max-http-conns=50"}, env(),
			func(o *options) {
				o.server.ReadTimeout, o.server.WriteTimeout, o.server.IdleTimeout = 20*time.Second, 5*time.Second, 2*time.Minute
				o.server.MaxHeaderBytes, o.server.MaxHTTPConns = 8192, 50
			}},
		{"max http conns 0 is unlimited", nil, env("WSGATE_MAX_HTTP_CONNS", "0"), func(o *options) { o.server.MaxHTTPConns = -1 }},
		{"read timeout follows a longer handshake timeout", []string{"-handshake-timeout=30s"}, env(),
			func(o *options) { o.server.HandshakeTimeout, o.server.ReadTimeout = 30*time.Second, 30*time.Second }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			got, err := parseArgs(tt.args, tt.getenv, &stdout, &stderr)
			if err != nil {
				t.Fatalf("parseArgs: %v\nstderr: %s", err, stderr.String())
			}
			want := options{server: defaultConfig(), logFormat: "text", logLevel: slog.LevelInfo}
			tt.change(&want)
			if want.showVersion {
				// -version stops there: nothing else is read.
				if !got.showVersion || got.server.Version != want.server.Version {
					t.Errorf("parseArgs(%q) = %+v, want showVersion and the version", tt.args, got)
				}
				return
			}
			got = effective(t, got)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("parseArgs(%q):\n got %+v\nwant %+v", tt.args, got, want)
			}
			if stdout.Len()+stderr.Len() > 0 {
				t.Errorf("unexpected output: %q %q", stdout.String(), stderr.String())
			}
		})
	}
}

func TestParseArgsErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		getenv  func(string) string
		wantOut string // in stderr
	}{
		{"unknown flag", []string{"-bogus"}, env(), "-bogus"},
		{"bad duration", []string{"-heartbeat=soon"}, env(), "-heartbeat"},
		{"bad env names the variable", nil, env("WSGATE_MAX_CONNS", "many"), "WSGATE_MAX_CONNS"},
		{"bad log format", []string{"-log-format=xml"}, env(), "-log-format"},
		{"bad log level", nil, env("WSGATE_LOG_LEVEL", "loud"), "WSGATE_LOG_LEVEL"},
		{"bad log level flag", []string{"-log-level=loud"}, env(), "-log-level"},
		{"negative max conns", []string{"-max-conns=-1"}, env(), "-max-conns"},
		{"negative event loops", []string{"-event-loops=-1"}, env(), "invalid -event-loops -1: must be 0"},
		{"zero read timeout", []string{"-read-timeout=0"}, env(), "-read-timeout"},
		{"read timeout shorter than handshake", []string{"-read-timeout=5s"}, env(), "invalid -read-timeout 5s: must not be shorter than the handshake timeout"},
		{"read timeout from env shorter than handshake flag", []string{"-handshake-timeout=20s"}, env("WSGATE_READ_TIMEOUT", "15s"), "invalid WSGATE_READ_TIMEOUT 15s"},
		{"header limit over 64 KiB", []string{"-max-header-bytes=1000000"}, env(), "-max-header-bytes"},
		{"bad allowed host", nil, env("WSGATE_ALLOWED_HOSTS", "a.example:http"), "invalid WSGATE_ALLOWED_HOSTS a.example:http: the port must be"},
		{"origin with a scheme", []string{"-allow-origin=https://a.example"}, env(), "-allow-origin"},
		{"bad address", []string{"-addr=localhost"}, env(), "-addr"},
		{"bad port", nil, env("WSGATE_ADDR", "127.0.0.1:http"), "WSGATE_ADDR"},
		{"missing config file", []string{"-config=/nonexistent/wsgate.yaml"}, env(), "/nonexistent/wsgate.yaml"},
		{"config file of unknown format", nil, env("WSGATE_CONFIG", "wsgate.toml"), "name it .yaml, .yml or .json"},
		{"negative shutdown timeout", []string{"-shutdown-timeout=-1s"}, env(), "-shutdown-timeout"},
		{"zero handshake timeout", []string{"-handshake-timeout=0"}, env(), "-handshake-timeout"},
		{"zero max message size", []string{"-max-message-size=0"}, env(), "-max-message-size"},
		{"zero memory budget", []string{"-memory-budget=0"}, env(), "invalid -memory-budget 0: must be positive, or -1 for no budget"},
		{"stray argument", []string{"serve"}, env(), `"serve"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			_, err := parseArgs(tt.args, tt.getenv, &stdout, &stderr)
			if err == nil || errors.Is(err, errHelp) {
				t.Fatalf("parseArgs(%q) = %v, want an error", tt.args, err)
			}
			if !strings.Contains(stderr.String(), tt.wantOut) {
				t.Errorf("stderr %q does not mention %q", stderr.String(), tt.wantOut)
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-help", "-h", "--help"} {
		var stdout, stderr bytes.Buffer
		_, err := parseArgs([]string{arg}, env(), &stdout, &stderr)
		if !errors.Is(err, errHelp) {
			t.Fatalf("%s: err = %v, want errHelp", arg, err)
		}
		if stderr.Len() > 0 {
			t.Errorf("%s: stderr %q, want nothing", arg, stderr.String())
		}
		help := stdout.String()
		if !strings.HasPrefix(help, "Usage: wsgate [flags]\n") {
			t.Errorf("%s: help does not start with the usage line:\n%s", arg, help)
		}
		for _, want := range []string{
			"-addr", "WSGATE_ADDR", `default "0.0.0.0:5555"`,
			"-heartbeat", "WSGATE_HEARTBEAT", "default 1s",
			"-allow-origin", "WSGATE_ALLOW_ORIGIN",
			"-max-conns", "WSGATE_MAX_CONNS", "default 10000",
			"-max-message-size", "WSGATE_MAX_MESSAGE_SIZE", "default 65536",
			"-handshake-timeout", "WSGATE_HANDSHAKE_TIMEOUT",
			"-shutdown-timeout", "WSGATE_SHUTDOWN_TIMEOUT",
			"-ping-interval", "WSGATE_PING_INTERVAL", "default 20s",
			"-ping-timeout", "WSGATE_PING_TIMEOUT",
			"-compression", "WSGATE_COMPRESSION",
			"-log-format", "WSGATE_LOG_FORMAT", `default "text"`,
			"-log-level", "WSGATE_LOG_LEVEL", `default "info"`,
			"-version",
		} {
			if !strings.Contains(help, want) {
				t.Errorf("%s: help lacks %q", arg, want)
			}
		}
		for i, line := range strings.Split(help, "\n") {
			if len(line) > 80 {
				t.Errorf("help line %d is %d characters long: %q", i+1, len(line), line)
			}
		}
		if strings.Contains(help, "WSGATE_VERSION") {
			t.Error("help offers WSGATE_VERSION")
		}
	}
}

func TestEveryFlagIsDocumented(t *testing.T) {
	// docs/server.md carries the flags table; keep it in step.
	doc, err := os.ReadFile("../../docs/server.md")
	if err != nil {
		t.Fatalf("reading docs/server.md: %v", err)
	}
	var stdout bytes.Buffer
	parseArgs([]string{"-help"}, env(), &stdout, io.Discard)
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z-]+)`).FindAllStringSubmatch(stdout.String(), -1) {
		name := m[1]
		if !bytes.Contains(doc, []byte("`-"+name+"`")) {
			t.Errorf("docs/server.md does not document -%s", name)
		}
		if env := envName(name); env != "" && !bytes.Contains(doc, []byte("`"+env+"`")) {
			t.Errorf("docs/server.md does not name %s", env)
		}
	}
}

func TestBuildVersion(t *testing.T) {
	old := version
	t.Cleanup(func() { version = old })
	version = "v1.2.3"
	if got := buildVersion(); got != "v1.2.3" {
		t.Errorf("buildVersion() = %q with -X main.version=v1.2.3", got)
	}
	version = "dev"
	if got := buildVersion(); got == "" {
		t.Error("buildVersion() is empty")
	}
}

func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(options{logFormat: "json", logLevel: slog.LevelWarn}, &buf)
	log.Info("hidden")
	log.Warn("shown", "k", 1)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("json log %q: %v", buf.String(), err)
	}
	if rec["msg"] != "shown" || rec["level"] != "WARN" {
		t.Errorf("record %v", rec)
	}
	buf.Reset()
	newLogger(options{logFormat: "text"}, &buf).Info("hello", "k", "v")
	if !strings.Contains(buf.String(), `msg=hello k=v`) {
		t.Errorf("text log %q", buf.String())
	}
}

// process runs this test binary as wsgate with args.
type process struct {
	cmd    *exec.Cmd
	addr   string
	stderr *bytes.Buffer // complete once wait has returned
	exited chan struct{}
	err    error
}

func startProcess(t *testing.T, args ...string) *process {
	t.Helper()
	return startProcessEnv(t, nil, args...)
}

// startProcessEnv is startProcess with extra environment variables.
func startProcessEnv(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-addr=127.0.0.1:0", "-log-format=json"}, args...)...)
	cmd.Env = append(append(os.Environ(), runMainEnv+"=1"), env...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, stderr: &bytes.Buffer{}, exited: make(chan struct{})}
	addrc := make(chan string, 1)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.stderr.Write(append(sc.Bytes(), '\n'))
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "wsgate listening" {
				addrc <- rec.Addr
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() {
		p.err = cmd.Wait()
		pw.Close()
		<-readDone
		close(p.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
	})
	select {
	case p.addr = <-addrc:
	case <-p.exited:
		t.Fatalf("wsgate exited early: %v\n%s", p.err, p.stderr)
	case <-time.After(10 * time.Second):
		t.Fatal("wsgate did not log its address")
	}
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *process) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(within):
		t.Fatalf("wsgate still running after %v", within)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("wait: %v", p.err)
	}
	return 0
}

func TestSignalShutsDownGracefully(t *testing.T) {
	p := startProcess(t)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + p.addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0\n%s", code, p.stderr)
	}
	if !strings.Contains(p.stderr.String(), "shutdown complete") {
		t.Errorf("no shutdown line in the log:\n%s", p.stderr)
	}
}

func TestSecondSignalExitsAtOnce(t *testing.T) {
	p := startProcess(t, "-shutdown-timeout=1m", "-heartbeat=0")
	// A client that never answers the close frame keeps the shutdown going.
	nc, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(nc, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", p.addr)
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}

	p.cmd.Process.Signal(os.Interrupt)
	// The close frame shows that the shutdown has begun.
	if b, err := br.ReadByte(); err != nil || b != 0x88 {
		t.Fatalf("first byte after SIGINT: %#x %v, want a close frame", b, err)
	}
	p.cmd.Process.Signal(os.Interrupt)
	if code := p.wait(t, 5*time.Second); code != 1 {
		t.Fatalf("exit code %d after a second SIGINT, want 1\n%s", code, p.stderr)
	}
	if !strings.Contains(p.stderr.String(), "second signal") {
		t.Errorf("no second-signal line in the log:\n%s", p.stderr)
	}
}

func TestSignalWithSlowBodiesExitsCleanly(t *testing.T) {
	// A read timeout far beyond the shutdown timeout: only the shutdown's
	// own bound on HTTP connections can end these clients in time.
	p := startProcess(t, "-shutdown-timeout=6s", "-read-timeout=1m", "-handshake-timeout=1m")
	for range 3 {
		nc, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		fmt.Fprintf(nc, "GET /healthz HTTP/1.1\r\nHost: %s\r\nContent-Length: 100000\r\n\r\nabc", p.addr)
	}
	// Let the requests reach the server before the signal.
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM with slow bodies open, want 0\n%s", code, p.stderr)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("shutdown with slow bodies took %v", d)
	}
}
