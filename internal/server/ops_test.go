package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate"
)

// testCert is a self-signed certificate for 127.0.0.1 and localhost,
// written to files.
type testCert struct {
	certPEM, keyPEM []byte
	leaf            *x509.Certificate
}

// newTestCert makes a certificate whose subject is cn.
func newTestCert(t *testing.T, cn string) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour).Truncate(time.Second),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return testCert{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		leaf:    leaf,
	}
}

// write writes the certificate and key to certFile and keyFile.
func (c testCert) write(t *testing.T, certFile, keyFile string) {
	t.Helper()
	if err := os.WriteFile(certFile, c.certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, c.keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
}

// clientTLS trusts the given certificates.
func clientTLS(certs ...testCert) *tls.Config {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c.leaf)
	}
	return &tls.Config{RootCAs: pool}
}

// startServerWith is startServer with a hook that runs between New and
// Serve.
func startServerWith(t *testing.T, cfg Config, hook func(*Server)) *testServer {
	t.Helper()
	log, logs := newTestLogger()
	s, err := New(cfg, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	hook(s)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: s, addr: ln.Addr().String(), logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() { ts.stop(t) })
	logs.waitLog(t, "wsgate listening", nil)
	return ts
}

// servedCert returns the certificate a new TLS handshake with addr gets.
func servedCert(t *testing.T, addr string, cfg *tls.Config) *x509.Certificate {
	t.Helper()
	d := tls.Dialer{Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0]
}

// TestTLS serves wss:// and https:// with a generated certificate, then
// replaces it twice, by ReloadTLS and by changing the files, while a
// connection made with the first one keeps working; a broken key file
// keeps the current certificate.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first, second, third := newTestCert(t, "first"), newTestCert(t, "second"), newTestCert(t, "third")
	first.write(t, certFile, keyFile)
	ts := startServerWith(t, Config{Heartbeat: -1, TLSCertFile: certFile, TLSKeyFile: keyFile}, func(s *Server) {
		s.tlsWatch = 20 * time.Millisecond
	})
	trust := clientTLS(first, second, third)

	old := dial(t, "wss://"+ts.addr+"/ws", &wsgate.Options{TLSConfig: trust})
	write(t, old, wsgate.TextMessage, []byte("over TLS"))
	if _, p := read(t, old); string(p) != "over TLS" {
		t.Fatalf("echo over TLS: %q", p)
	}
	client := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{TLSClientConfig: trust}}
	res, err := client.Get("https://" + ts.addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.TLS == nil || res.TLS.Version < tls.VersionTLS12 || res.ProtoMajor != 1 {
		t.Fatalf("https: %d, TLS %v, %s", res.StatusCode, res.TLS != nil, res.Proto)
	}
	// Plain HTTP on the TLS port is refused, and so is TLS 1.1.
	if res, err := (&http.Client{Timeout: waitTimeout}).Get("http://" + ts.addr + "/healthz"); err == nil {
		res.Body.Close()
		if res.StatusCode == 200 {
			t.Fatal("plain HTTP answered 200 on the TLS port")
		}
	}
	old11 := clientTLS(first)
	old11.MaxVersion = tls.VersionTLS11
	if c, err := tls.Dial("tcp", ts.addr, old11); err == nil {
		c.Close()
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
	if got := servedCert(t, ts.addr, trust).Subject.CommonName; got != "first" {
		t.Fatalf("served %q", got)
	}

	// Reload on request (SIGHUP in Run).
	second.write(t, certFile, keyFile)
	if err := ts.ReloadTLS(); err != nil {
		t.Fatalf("ReloadTLS: %v", err)
	}
	if got := servedCert(t, ts.addr, trust).Subject.CommonName; got != "second" {
		t.Fatalf("after ReloadTLS, served %q", got)
	}

	// A broken key file: the reload fails, the current certificate stays.
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ts.ReloadTLS(); err == nil {
		t.Fatal("ReloadTLS with a broken key succeeded")
	}
	if got := servedCert(t, ts.addr, trust).Subject.CommonName; got != "second" {
		t.Fatalf("after a failed reload, served %q", got)
	}

	// The watcher notices changed files by itself.
	third.write(t, certFile, keyFile)
	waitFor(t, "the watcher to load the third certificate", func() bool {
		return servedCert(t, ts.addr, trust).Subject.CommonName == "third"
	})

	// The connection made with the first certificate never noticed.
	write(t, old, wsgate.TextMessage, []byte("still here"))
	if _, p := read(t, old); string(p) != "still here" {
		t.Fatalf("echo on the old connection: %q", p)
	}

	m := scrapeWith(t, client, "https://"+ts.addr+"/metrics")
	m.want(t, float64(third.leaf.NotAfter.Unix()), "wsgate_tls_certificate_expiry_timestamp_seconds")
	// First, second (ReloadTLS) and third (the watcher): at least three.
	// The watcher, ticking every 20 ms, may also have loaded the second
	// files between their writing and ReloadTLS, so the metric is checked
	// against the store's own count.
	loads := ts.certs.loads.Load()
	if loads < 3 {
		t.Errorf("%d successful loads, want at least 3", loads)
	}
	m.want(t, float64(loads), "wsgate_tls_certificate_loads_total", "result=ok")
	if v := m.value("wsgate_tls_certificate_loads_total", "result=error"); v < 1 {
		t.Errorf("failed loads = %v, want at least 1", v)
	}
}

// adminConfig is a server with the admin address, page and a password.
func adminConfig() Config {
	cfg := demoConfig()
	cfg.AdminAddr = ":0" // loopback by default
	cfg.Admin = true
	cfg.AdminPassword = testAdminPassword
	return cfg
}

const testAdminPassword = "correct horse battery"

// adminGet gets path on the admin address with an Authorization header
// (none when auth is "").
func adminGet(t *testing.T, ts *testServer, path, auth string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+ts.AdminAddr().String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return httpDo(t, req)
}

func basicAuth(password string) string {
	req, _ := http.NewRequest(http.MethodGet, "/", nil)
	req.SetBasicAuth("admin", password)
	return req.Header.Get("Authorization")
}

// TestAdmin checks the admin address: loopback by default, /metrics there
// and not on the main address, /admin refused without the password and
// served with it (with a CSP), the stats API, and no profiler.
func TestAdmin(t *testing.T) {
	ts := startServer(t, adminConfig())
	if ip := ts.AdminAddr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		t.Fatalf("admin address %v is not loopback", ip)
	}
	if st, _, _ := httpGet(t, ts.httpURL()+"/metrics"); st != http.StatusNotFound {
		t.Errorf("/metrics on the main address with an admin address: %d", st)
	}
	if st, _, _ := adminGet(t, ts, "/metrics", ""); st != http.StatusOK {
		t.Errorf("/metrics on the admin address: %d", st)
	}
	for _, auth := range []string{"", basicAuth("wrong password"), "Bearer wrong", basicAuth(testAdminPassword + "x")} {
		for _, path := range []string{"/admin/", "/admin/api/stats", "/admin/admin.js"} {
			st, h, body := adminGet(t, ts, path, auth)
			if st != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Basic ") || strings.Contains(body, "wsgate admin</h1>") {
				t.Errorf("GET %s with %q: %d %q", path, auth, st, h.Get("WWW-Authenticate"))
			}
		}
	}
	st, h, body := adminGet(t, ts, "/admin/", basicAuth(testAdminPassword))
	if st != http.StatusOK || !strings.Contains(body, "wsgate admin") || !strings.Contains(h.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("GET /admin/ with the password: %d %q", st, h.Get("Content-Security-Policy"))
	}
	sub := dialHub(t, ts)
	sub.connect("")
	sub.subscribe("news")
	// The figures settle a moment after the subscribe reply.
	var stats adminStats
	waitFor(t, "the admin figures to show the subscriber", func() bool {
		st, _, body = adminGet(t, ts, "/admin/api/stats", "Bearer "+testAdminPassword)
		if st != http.StatusOK {
			t.Fatalf("stats: %d", st)
		}
		stats = adminStats{}
		if err := json.Unmarshal([]byte(body), &stats); err != nil {
			t.Fatalf("stats: %v in %s", err, body)
		}
		return stats.Connections["hub"] == 1 && stats.Hub != nil && stats.Hub.Subscriptions == 1 &&
			len(stats.TopChannels) == 1 && stats.TopChannels[0].Channel == "news" &&
			len(stats.Nodes) == 1 && stats.Nodes[0].Self && stats.Broker != nil && stats.Broker.Up
	})
	for _, url := range []string{"http://" + ts.AdminAddr().String() + "/debug/pprof/", ts.httpURL() + "/debug/pprof/"} {
		if st, _, _ := httpGet(t, url); st != http.StatusNotFound {
			t.Errorf("%s without -pprof: %d", url, st)
		}
	}
}

// TestPprof checks that the profiler is on the admin address when
// enabled, and never on the main address.
func TestPprof(t *testing.T) {
	cfg := Config{Heartbeat: -1, AdminAddr: "127.0.0.1:0", Pprof: true}
	ts := startServer(t, cfg)
	if st, _, body := httpGet(t, "http://"+ts.AdminAddr().String()+"/debug/pprof/"); st != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("pprof on the admin address: %d", st)
	}
	if st, _, _ := httpGet(t, "http://"+ts.AdminAddr().String()+"/debug/pprof/heap?debug=1"); st != http.StatusOK {
		t.Errorf("heap profile: %d", st)
	}
	if st, _, _ := httpGet(t, ts.httpURL()+"/debug/pprof/"); st != http.StatusNotFound {
		t.Errorf("pprof on the main address: %d", st)
	}
	if st, _, _ := httpGet(t, "http://"+ts.AdminAddr().String()+"/admin/"); st != http.StatusNotFound {
		t.Errorf("/admin/ without Admin: %d", st)
	}
}

// TestOpsConfigErrors checks the errors of the operations settings.
func TestOpsConfigErrors(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	newTestCert(t, "x").write(t, certFile, keyFile)
	for _, tc := range []struct {
		cfg          Config
		field, words string
	}{
		{Config{Admin: true, AdminPassword: testAdminPassword}, "Admin", "set AdminAddr"},
		{Config{Admin: true, AdminAddr: ":9090", AdminPassword: "short"}, "AdminPassword", "at least 8"},
		{Config{Pprof: true}, "Pprof", "only on the admin address"},
		{Config{AdminAddr: "nonsense"}, "AdminAddr", "host:port"},
		{Config{AdminAddr: "127.0.0.1:5555", Addr: "127.0.0.1:5555"}, "AdminAddr", "main address"},
		{Config{TLSCertFile: certFile}, "TLSKeyFile", "both"},
		{Config{TLSKeyFile: keyFile}, "TLSCertFile", "both"},
		{Config{TLSCertFile: keyFile, TLSKeyFile: keyFile}, "TLSCertFile", "cannot load"},
		{Config{TLSCertFile: filepath.Join(dir, "missing.pem"), TLSKeyFile: keyFile}, "TLSCertFile", "no such file"},
	} {
		_, err := New(tc.cfg, nil)
		fes := FieldErrors(err)
		if len(fes) != 1 || fes[0].Field != tc.field || !strings.Contains(fes[0].Reason, tc.words) {
			t.Errorf("%+v: %v", tc.cfg, err)
		}
		if strings.Contains(err.Error(), "short") && tc.field == "AdminPassword" {
			t.Errorf("the error shows the password: %v", err)
		}
	}
	c, err := Config{AdminAddr: ":9090"}.Effective()
	if err != nil || c.AdminAddr != "127.0.0.1:9090" {
		t.Errorf("AdminAddr :9090 became %q, %v", c.AdminAddr, err)
	}
}
