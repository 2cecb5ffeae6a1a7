package conformance

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// handshakeCases checks the opening handshake (RFC 6455 section 4.2).
func (s *suite) handshakeCases() []testCase {
	// rejected runs a request changed by edit and requires one of the
	// statuses, and no upgrade.
	rejected := func(name string, edit func(r *request), statuses ...int) testCase {
		return testCase{name, func(t *testing.T) {
			req := s.newRequest()
			edit(req)
			_, _, resp := s.upgrade(t, req)
			if !slices.Contains(statuses, resp.StatusCode) {
				t.Fatalf("want status %s, got %q (Sec-WebSocket-Accept %q)", statusList(statuses), resp.Status, resp.Header.Get("Sec-WebSocket-Accept"))
			}
			checkVersionHeader(t, resp)
		}}
	}
	// accepted runs a request changed by edit and requires a valid 101
	// and a working echo.
	accepted := func(name string, edit func(r *request)) testCase {
		return testCase{name, func(t *testing.T) {
			req := s.newRequest()
			edit(req)
			nc, br, resp := s.upgrade(t, req)
			if err := checkSwitch(req.get("Sec-WebSocket-Key"), resp); err != nil {
				t.Fatal(err)
			}
			if ext := resp.Header.Values("Sec-WebSocket-Extensions"); len(ext) > 0 {
				t.Fatalf("handshake: response has Sec-WebSocket-Extensions %q, but no extension was offered", ext)
			}
			c := newConn(t, s, nc, br, resp)
			c.send(textFrame("handshake"))
			c.expectText("handshake")
			c.closeNormally()
		}}
	}
	var all4xx []int
	for code := 400; code < 500; code++ {
		all4xx = append(all4xx, code)
	}
	return []testCase{
		accepted("accept-key", func(*request) {}),
		accepted("header-case-insensitive", func(r *request) {
			r.del("Upgrade")
			r.del("Connection")
			r.set("upgrade", "WebSocket")
			r.set("connection", "upgrade")
		}),
		accepted("connection-keep-alive-upgrade", func(r *request) { r.set("Connection", "keep-alive, Upgrade") }),
		rejected("missing-key", func(r *request) { r.del("Sec-WebSocket-Key") }, http.StatusBadRequest),
		rejected("key-not-base64", func(r *request) { r.set("Sec-WebSocket-Key", "not base64 at all!!") }, http.StatusBadRequest),
		rejected("key-15-bytes", func(r *request) {
			r.set("Sec-WebSocket-Key", base64.StdEncoding.EncodeToString([]byte("fifteen bytes!!")))
		}, http.StatusBadRequest),
		rejected("key-17-bytes", func(r *request) {
			r.set("Sec-WebSocket-Key", base64.StdEncoding.EncodeToString([]byte("seventeen bytes!!")))
		}, http.StatusBadRequest),
		rejected("version=8", func(r *request) { r.set("Sec-WebSocket-Version", "8") }, http.StatusUpgradeRequired),
		rejected("version=14", func(r *request) { r.set("Sec-WebSocket-Version", "14") }, http.StatusUpgradeRequired),
		rejected("missing-version", func(r *request) { r.del("Sec-WebSocket-Version") }, http.StatusBadRequest, http.StatusUpgradeRequired),
		rejected("missing-upgrade", func(r *request) { r.del("Upgrade") }, all4xx...),
		rejected("method=POST", func(r *request) { r.method = "POST" }, all4xx...),
	}
}

// checkVersionHeader requires a 426 response to name version 13 in
// Sec-WebSocket-Version (RFC 6455 section 4.2.2).
func checkVersionHeader(t *testing.T, resp *http.Response) {
	t.Helper()
	if resp.StatusCode != http.StatusUpgradeRequired {
		return
	}
	if !headerHasToken(resp.Header, "Sec-WebSocket-Version", "13") {
		t.Fatalf("status 426 must come with Sec-WebSocket-Version: 13, got %q", resp.Header.Values("Sec-WebSocket-Version"))
	}
}

// statusList describes acceptable statuses.
func statusList(statuses []int) string {
	if len(statuses) > 10 {
		return "4xx"
	}
	parts := make([]string, len(statuses))
	for i, st := range statuses {
		parts[i] = fmt.Sprintf("%d %s", st, http.StatusText(st))
	}
	return strings.Join(parts, " or ")
}
