package server

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
)

// loopbackHosts is the default host allowlist of a server that listens on
// a loopback address.
var loopbackHosts = []string{"localhost", "127.0.0.1", "[::1]"}

// Sources of a hostPolicy, as logged at startup.
const (
	hostsConfigured      = "configured"
	hostsLoopbackDefault = "default for a loopback address"
	hostsAnyDefault      = "default: any host"
)

// hostPolicy decides which Host header values the server answers: the
// defence against DNS rebinding, where a page of the attacker's site is
// served a DNS answer that points at this server, so that the browser
// sends the attacker's host name in Host.
type hostPolicy struct {
	any      bool
	allowed  []hostPattern
	source   string // how the policy was chosen, for the startup log
	original []string
}

// hostPattern is one parsed AllowedHosts entry.
type hostPattern struct {
	host string     // lower-case path.Match pattern; unused when ip is valid
	ip   netip.Addr // a bracketed IPv6 literal, compared as an address
	port string     // "" matches any port
}

// hostPolicyFor returns the policy for the AllowedHosts patterns (already
// validated) of a server listening on addr.
func hostPolicyFor(patterns []string, addr string) *hostPolicy {
	source := hostsConfigured
	if len(patterns) == 0 {
		if !isLoopbackAddr(addr) {
			return &hostPolicy{any: true, source: hostsAnyDefault}
		}
		patterns, source = loopbackHosts, hostsLoopbackDefault
	}
	p := &hostPolicy{source: source, original: patterns}
	for _, s := range patterns {
		hp, err := parseHostPattern(s)
		if err != nil {
			continue // withDefaults has refused the config already
		}
		if hp.host == "*" && hp.port == "" && !hp.ip.IsValid() {
			return &hostPolicy{any: true, source: source}
		}
		p.allowed = append(p.allowed, hp)
	}
	return p
}

// patterns returns the policy as AllowedHosts patterns: ["*"] for any host.
func (p *hostPolicy) patterns() []string {
	if p.any {
		return []string{"*"}
	}
	return append([]string(nil), p.original...)
}

// allows reports whether the server answers requests for hostport, the
// request's Host.
func (p *hostPolicy) allows(hostport string) bool {
	if p.any {
		return true
	}
	host, port := splitHostPort(hostport)
	if host == "" {
		return false
	}
	ip, ipErr := netip.ParseAddr(host)
	for _, a := range p.allowed {
		if a.port != "" && a.port != port {
			continue
		}
		if a.ip.IsValid() {
			if ipErr == nil && ip.WithZone("") == a.ip {
				return true
			}
			continue
		}
		if ok, _ := path.Match(a.host, host); ok {
			return true
		}
	}
	return false
}

// splitHostPort splits a Host header into a lower-case host without
// brackets or trailing dot, and a port ("" if none).
func splitHostPort(hostport string) (host, port string) {
	host = hostport
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		host, port = h, p
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	return host, port
}

// parseHostPattern parses an AllowedHosts entry: a host pattern
// (path.Match syntax) or a bracketed IPv6 literal, with an optional
// ":port" where the port is a number or "*".
func parseHostPattern(s string) (hostPattern, error) {
	var hp hostPattern
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		// A bracketed IPv6 literal, or a path.Match character class.
		if end := strings.IndexByte(s, ']'); end > 0 {
			if ip, err := netip.ParseAddr(s[1:end]); err == nil && ip.Is6() {
				hp.ip = ip
				host, port = "", strings.TrimPrefix(s[end+1:], ":")
				if rest := s[end+1:]; rest != "" && !strings.HasPrefix(rest, ":") {
					return hp, errors.New("unexpected text after the IPv6 address")
				}
			}
		}
	}
	if !hp.ip.IsValid() {
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			host, port = s[:i], s[i+1:]
			if strings.Contains(host, ":") {
				return hp, errors.New("an IPv6 address must be in brackets, e.g. [::1]")
			}
		}
		host = strings.TrimSuffix(strings.ToLower(host), ".")
		if host == "" {
			return hp, errors.New("empty host")
		}
		if _, err := path.Match(host, ""); err != nil {
			return hp, errors.New("not a valid path.Match pattern")
		}
		hp.host = host
	}
	switch {
	case port == "*":
		port = ""
	case port != "":
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return hp, errors.New("the port must be a number from 1 to 65535 or *")
		}
	case strings.HasSuffix(s, ":"):
		return hp, errors.New("empty port")
	}
	hp.port = port
	return hp, nil
}

// isLoopbackAddr reports whether a listen address is on a loopback
// interface: localhost, 127.0.0.0/8 or ::1, with or without a port.
func isLoopbackAddr(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// checkHost answers 421 (misdirected request) to a request whose Host the
// policy does not allow, before h sees it.
//
// 421 rather than 403: the request is not forbidden to this client, it was
// sent to a server that does not serve that name (RFC 9110 §15.5.20 defines
// 421 for exactly that). It tells a confused operator to look at DNS or a
// proxy's Host header rather than at credentials.
func (s *Server) checkHost(policy *atomic.Pointer[hostPolicy], h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := policy.Load(); !p.allows(r.Host) {
			s.log.LogAttrs(r.Context(), slog.LevelWarn, "host rejected",
				slog.Int("status", http.StatusMisdirectedRequest),
				slog.String("host", r.Host),
				slog.String("path", r.URL.Path),
				slog.String("remote", r.RemoteAddr))
			w.Header().Set("Connection", "close")
			plain(w, http.StatusMisdirectedRequest, "misdirected request: this server does not answer for that host name")
			return
		}
		h.ServeHTTP(w, r)
	})
}
