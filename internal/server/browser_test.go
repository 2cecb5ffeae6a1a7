package server

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/web"
)

// findChromium returns the browser to drive: $WSGATE_CHROMIUM, else
// Debian's /usr/bin/chromium or another Chromium on $PATH. Without one the
// test is skipped, unless WSGATE_REQUIRE_BROWSER is set (to anything but
// "0" or "false"; CI sets 1): then a missing browser is a failure.
func findChromium(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("WSGATE_CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	if req := os.Getenv("WSGATE_REQUIRE_BROWSER"); req != "" && req != "0" && req != "false" {
		t.Fatalf("WSGATE_REQUIRE_BROWSER is set but no Chromium was found (tried %q)", candidates)
	}
	t.Skip("Chromium not found; install it (apt-get install chromium) or set WSGATE_REQUIRE_BROWSER=1 to make this a failure")
	return ""
}

// browser starts a headless Chromium for the test and returns a tab.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := findChromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	actx, acancel := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 700),
	)
	t.Cleanup(acancel)
	tab, tcancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(tcancel)
	return tab
}

// logLines returns the page's log, one string per line.
func logLines(t *testing.T, tab context.Context) []string {
	t.Helper()
	lines, err := chromedp.Run(tab, chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll("#output .line"), e => e.textContent)`))
	if err != nil {
		t.Fatalf("reading the log: %v", err)
	}
	return lines
}

// waitJS waits until the JavaScript expression is truthy.
func waitJS(t *testing.T, tab context.Context, what, expr string) {
	t.Helper()
	_, err := chromedp.Run(tab, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(waitTimeout)))
	if err != nil {
		t.Fatalf("waiting for %s (%s): %v\nlog: %q", what, expr, err, logLines(t, tab))
	}
}

// waitLine waits until the page's log has a line with prefix.
func waitLine(t *testing.T, tab context.Context, prefix string) {
	t.Helper()
	waitJS(t, tab, fmt.Sprintf("log line %q", prefix),
		fmt.Sprintf(`Array.from(document.querySelectorAll("#output .line")).some(e => e.textContent.startsWith(%q))`, prefix))
}

func do(t *testing.T, tab context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(tab, steps...); err != nil {
		t.Fatalf("%s: %v\nlog: %q", what, err, logLines(t, tab))
	}
}

func eval[T any](t *testing.T, tab context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(tab, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

func TestBrowser(t *testing.T) {
	tab := browser(t)
	ts := startServer(t, Config{Heartbeat: 100 * time.Millisecond})
	const xss = `<img src=x onerror="window.__xss=1">`

	do(t, tab, "loading the page",
		chromedp.Navigate(ts.httpURL()+"/"),
		chromedp.WaitVisible(chromedp.ID("open")),
	)
	if got, want := eval[string](t, tab, `document.getElementById("url").value`), ts.wsURL(); got != want {
		t.Errorf("socket URL %q, want %q (from the page's location)", got, want)
	}
	if got := eval[string](t, tab, `document.getElementById("input").value`); got != "Hello world!" {
		t.Errorf("input prefilled with %q", got)
	}
	if got := eval[string](t, tab, `document.getElementById("state").textContent`); got != "closed" {
		t.Errorf("initial state %q, want closed", got)
	}

	// The tutorial's session: Open, Send, the echo, heartbeats.
	do(t, tab, "opening", chromedp.Click(chromedp.ID("open")))
	waitLine(t, tab, "OPEN")
	waitJS(t, tab, "state open", `document.getElementById("state").textContent === "open"`)
	do(t, tab, "sending", chromedp.Click(chromedp.ID("send")))
	waitLine(t, tab, "SEND: Hello world!")
	waitLine(t, tab, "RESPONSE: Hello world!")
	waitJS(t, tab, "three heartbeats", `Number(document.getElementById("heartbeats").textContent) >= 3`)
	if n := countPrefix(logLines(t, tab), "RESPONSE: heartbeat"); n != 1 {
		t.Errorf("%d heartbeat lines in the log, want only the first one", n)
	}

	// Binary: sent as bytes, shown as a hex preview.
	do(t, tab, "sending binary",
		chromedp.Click(chromedp.ID("binary")),
		chromedp.SetValue(chromedp.ID("input"), "AB\x01"),
		chromedp.Click(chromedp.ID("send")),
	)
	waitLine(t, tab, "RESPONSE: [binary 3 bytes] 41 42 01")
	do(t, tab, "sending a long binary message",
		chromedp.SetValue(chromedp.ID("input"), strings.Repeat("z", 20)),
		chromedp.Click(chromedp.ID("send")),
	)
	waitLine(t, tab, "RESPONSE: [binary 20 bytes] "+strings.TrimSpace(strings.Repeat("7a ", 16))+" …")
	do(t, tab, "back to text", chromedp.Click(chromedp.ID("binary")))

	// The echoed markup is shown as text and never runs.
	do(t, tab, "sending markup",
		chromedp.SetValue(chromedp.ID("input"), xss),
		chromedp.Click(chromedp.ID("send")),
	)
	waitLine(t, tab, "RESPONSE: "+xss)
	if !eval[bool](t, tab, `window.__xss === undefined && document.querySelector("#output img") === null`) {
		t.Error("the echoed markup was rendered as HTML")
	}

	saveScreenshot(t, tab, "wsgate-page.png")

	// Close: a clean close with 1000.
	do(t, tab, "closing", chromedp.Click(chromedp.ID("close")))
	waitLine(t, tab, "CLOSE code=1000")
	waitJS(t, tab, "state closed", `document.getElementById("state").textContent === "closed"`)
	ts.logs.waitLog(t, "ws close", map[string]any{"code": 1000, "by_client": true})
	if !eval[bool](t, tab, `window.__xss === undefined`) {
		t.Error("window.__xss was set")
	}

	// Opened from disk, the page falls back to the tutorial's address.
	dir := t.TempDir()
	if err := os.CopyFS(dir, web.FS); err != nil {
		t.Fatal(err)
	}
	do(t, tab, "loading the page from disk",
		chromedp.Navigate("file://"+filepath.ToSlash(filepath.Join(dir, "index.html"))),
		chromedp.WaitVisible(chromedp.ID("open")),
	)
	waitJS(t, tab, "the script to run", `document.getElementById("url").value !== ""`)
	if got := eval[string](t, tab, `document.getElementById("url").value`); got != "ws://localhost:5555/ws" {
		t.Errorf("socket URL from disk %q, want ws://localhost:5555/ws", got)
	}
	if got := eval[string](t, tab, `document.getElementById("ps-url").value`); got != "ws://localhost:5555/connection/websocket" {
		t.Errorf("pub/sub URL from disk %q, want ws://localhost:5555/connection/websocket", got)
	}
}

func TestBrowserReconnect(t *testing.T) {
	tab := browser(t)
	ts := startServer(t, Config{Heartbeat: -1})
	do(t, tab, "loading the page and connecting with auto-reconnect",
		chromedp.Navigate(ts.httpURL()+"/"),
		chromedp.WaitVisible(chromedp.ID("open")),
		chromedp.Click(chromedp.ID("reconnect")),
		chromedp.Click(chromedp.ID("open")),
	)
	waitJS(t, tab, "state open", `document.getElementById("state").textContent === "open"`)

	// The server drops the connection: the page reconnects after 0.5s.
	ts.mu.Lock()
	for c := range ts.conns {
		c.CloseWithStatus(wsgate.StatusServiceRestart, "restarting")
	}
	ts.mu.Unlock()
	waitLine(t, tab, "CLOSE code=1012 reason=restarting")
	waitLine(t, tab, "RECONNECT in 0.5s")
	waitJS(t, tab, "a second OPEN", `Array.from(document.querySelectorAll("#output .line")).filter(e => e.textContent === "OPEN").length === 2`)
	waitJS(t, tab, "state open again", `document.getElementById("state").textContent === "open"`)

	// Close stops the retries.
	do(t, tab, "closing", chromedp.Click(chromedp.ID("close")))
	waitLine(t, tab, "CLOSE code=1000")
	waitFor(t, "the server to see the close", func() bool { return ts.ConnCount() == 0 })
	if n := countPrefix(logLines(t, tab), "RECONNECT"); n != 1 {
		t.Errorf("%d RECONNECT lines after Close, want 1", n)
	}
}

func countPrefix(lines []string, prefix string) int {
	return len(slices.DeleteFunc(slices.Clone(lines), func(l string) bool { return !strings.HasPrefix(l, prefix) }))
}

// saveScreenshot writes the page to $WSGATE_SCREENSHOT_DIR (for a human to
// look at) or to the test's temp dir.
func saveScreenshot(t *testing.T, tab context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(tab, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv("WSGATE_SCREENSHOT_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// psLines returns the pub/sub panel's log, one string per line.
func psLines(t *testing.T, tab context.Context) []string {
	t.Helper()
	lines, err := chromedp.Run(tab, chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll("#ps-output .line"), e => e.textContent)`))
	if err != nil {
		t.Fatalf("reading the pub/sub log: %v", err)
	}
	return lines
}

// waitPS waits until the pub/sub log has a line equal to line, or starting
// with it when it ends with "…".
func waitPS(t *testing.T, tab context.Context, line string) {
	t.Helper()
	cond := fmt.Sprintf(`e.textContent === %q`, line)
	if prefix, ok := strings.CutSuffix(line, "…"); ok {
		cond = fmt.Sprintf(`e.textContent.startsWith(%q)`, prefix)
	}
	expr := fmt.Sprintf(`Array.from(document.querySelectorAll("#ps-output .line")).some(e => %s)`, cond)
	_, err := chromedp.Run(tab, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(waitTimeout)))
	if err != nil {
		t.Fatalf("waiting for the pub/sub line %q: %v\nlog: %q", line, err, psLines(t, tab))
	}
}

// psConnectAndJoin connects the page's pub/sub panel and joins channel.
func psConnectAndJoin(t *testing.T, tab context.Context, url, channel string) {
	t.Helper()
	do(t, tab, "loading the page and connecting",
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.ID("ps-connect")),
		chromedp.Click(chromedp.ID("ps-connect")),
	)
	waitJS(t, tab, "pub/sub connected", `document.getElementById("ps-state").textContent === "connected"`)
	do(t, tab, "joining "+channel,
		chromedp.SetValue(chromedp.ID("ps-channel"), channel),
		chromedp.Click(chromedp.ID("ps-join")),
	)
	waitPS(t, tab, "JOINED "+channel+"…")
}

// psPublish publishes text from the page.
func psPublish(t *testing.T, tab context.Context, text string) {
	t.Helper()
	do(t, tab, "publishing "+text,
		chromedp.SetValue(chromedp.ID("ps-message"), text),
		chromedp.Click(chromedp.ID("ps-publish")),
	)
}

// TestBrowserPubSub: two pages on one channel see each other's messages,
// and what a backend publishes through /api/publish, with their offsets,
// their presence, and a page that comes back recovers what it missed.
func TestBrowserPubSub(t *testing.T) {
	one := browser(t)
	ts := startServer(t, demoConfig())
	api := ts.httpURL() + "/api"
	const xss = `<img src=x onerror="window.__xss=1">`

	psConnectAndJoin(t, one, ts.httpURL()+"/", "room")
	if got := eval[string](t, one, `document.getElementById("ps-demo-command").textContent`); got != "go run ./cmd/wsgate "+DemoFlags {
		t.Errorf("the page's demo command %q, want the demo flags", got)
	}
	// A second tab of the same browser (which runs once the first one has).
	two, cancel := chromedp.NewContext(one)
	t.Cleanup(cancel)
	psConnectAndJoin(t, two, ts.httpURL()+"/", "room")
	waitPS(t, one, "JOIN anonymous …") // join_leave is on
	for _, tab := range []context.Context{one, two} {
		waitJS(t, tab, "presence of two", `document.getElementById("ps-presence").textContent === "2 clients, 1 users"`)
	}

	psPublish(t, one, "hello from one")
	for _, tab := range []context.Context{one, two} {
		waitPS(t, tab, "#1 anonymous …")
		waitJS(t, tab, "the first message", `Array.from(document.querySelectorAll("#ps-output .line")).some(e => /^#1 anonymous \w+: hello from one$/.test(e.textContent))`)
	}
	psPublish(t, two, "hello from two")
	for _, tab := range []context.Context{one, two} {
		waitJS(t, tab, "the second message", `Array.from(document.querySelectorAll("#ps-output .line")).some(e => /^#2 anonymous \w+: hello from two$/.test(e.textContent))`)
	}
	publish(t, api, "room", map[string]string{"text": "from the backend"})
	publish(t, api, "room", map[string]string{"text": xss})
	for _, tab := range []context.Context{one, two} {
		waitPS(t, tab, "#3 server: from the backend")
		waitPS(t, tab, "#4 server: "+xss)
		if !eval[bool](t, tab, `window.__xss === undefined && document.querySelector("#ps-output img") === null`) {
			t.Error("a publication was rendered as HTML")
		}
	}
	saveScreenshot(t, one, "wsgate-pubsub.png")

	// Page two leaves the connection, misses a publication, and recovers it.
	do(t, two, "disconnecting", chromedp.Click(chromedp.ID("ps-disconnect")))
	waitPS(t, two, "CLOSE code=1000 …")
	waitJS(t, one, "presence of one", `document.getElementById("ps-presence").textContent === "1 clients, 1 users"`)
	publish(t, api, "room", map[string]string{"text": "while you were away"})
	waitPS(t, one, "#5 server: while you were away")
	do(t, two, "connecting again", chromedp.Click(chromedp.ID("ps-connect")))
	waitJS(t, two, "connected again", `document.getElementById("ps-state").textContent === "connected"`)
	do(t, two, "joining again", chromedp.Click(chromedp.ID("ps-join")))
	waitPS(t, two, "JOINED room offset=5 recovered=1")
	if n := countPrefix(psLines(t, two), "#5 server: while you were away"); n != 1 {
		t.Errorf("the missed publication shows %d times on page two, want once", n)
	}
}

// TestBrowserPubSubToken: without anonymous access the page says how to
// get in; with a token it connects as the token's user; client publishing
// off is explained.
func TestBrowserPubSubToken(t *testing.T) {
	tab := browser(t)
	ts := startServer(t, Config{Heartbeat: -1, Tokens: auth.Config{HMACSecret: testSecret}, APIKey: testAPIKey})
	do(t, tab, "connecting without a token",
		chromedp.Navigate(ts.httpURL()+"/"),
		chromedp.WaitVisible(chromedp.ID("ps-connect")),
		chromedp.Click(chromedp.ID("ps-connect")),
	)
	waitPS(t, tab, "CLOSE code=3501 reason=bad request")
	waitPS(t, tab, "The server does not accept anonymous connections: …")
	waitJS(t, tab, "disconnected", `document.getElementById("ps-state").textContent === "disconnected"`)

	do(t, tab, "connecting with a bad token",
		chromedp.SetValue(chromedp.ID("ps-token"), userToken(t, "another-secret", "alice")),
		chromedp.Click(chromedp.ID("ps-connect")),
	)
	waitPS(t, tab, "CLOSE code=3500 reason=invalid token")

	do(t, tab, "connecting with a token",
		chromedp.SetValue(chromedp.ID("ps-token"), userToken(t, testSecret, "alice")),
		chromedp.Click(chromedp.ID("ps-connect")),
	)
	waitJS(t, tab, "connected", `document.getElementById("ps-state").textContent === "connected"`)
	do(t, tab, "joining", chromedp.Click(chromedp.ID("ps-join")))
	waitPS(t, tab, "JOINED demo")
	publish(t, ts.httpURL()+"/api", "demo", map[string]string{"text": "hi alice"})
	waitPS(t, tab, "server: hi alice")
	psPublish(t, tab, "may I?")
	waitPS(t, tab, "ERROR publish: 103 permission denied (start the server with -allow-publish)")
	if got := eval[string](t, tab, `document.getElementById("ps-presence").textContent`); got != "off on this server" {
		t.Errorf("presence %q, want off on this server", got)
	}
}
