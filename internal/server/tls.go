package server

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate/internal/metrics"
)

// DefaultTLSWatchInterval is how often the server looks at the certificate
// and key files for a change, when serving TLS.
const DefaultTLSWatchInterval = 10 * time.Second

// certStore holds the certificate the server presents, loaded from
// Config.TLSCertFile and TLSKeyFile and replaced when they change: on
// Server.ReloadTLS (SIGHUP in Run) and when the watcher sees the files'
// modification time or size change. A failed reload keeps the previous
// certificate. Handshakes read the current one through GetCertificate, so
// connections already established are never touched.
type certStore struct {
	certFile, keyFile string
	log               *slog.Logger

	cur      atomic.Pointer[tls.Certificate]
	loads    atomic.Uint64
	failures atomic.Uint64

	mu     sync.Mutex // serializes loads
	stamp  fileStamp  // the files as of the last attempt
	failed bool       // the last attempt failed: try again at the next tick
}

// fileStamp identifies a version of the two files.
type fileStamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

// loadKeyPair reads and checks a certificate and its key.
func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	// Leaf is parsed by LoadX509KeyPair since Go 1.23.
	if cert.Leaf == nil {
		return nil, fmt.Errorf("%s: no certificate", certFile)
	}
	return &cert, nil
}

// newCertStore loads the key pair; it fails when it cannot.
func newCertStore(certFile, keyFile string, log *slog.Logger) (*certStore, error) {
	cs := &certStore{certFile: certFile, keyFile: keyFile, log: log}
	cs.stamp, _ = cs.statFiles()
	cert, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	cs.cur.Store(cert)
	cs.loads.Add(1)
	return cs, nil
}

func (cs *certStore) statFiles() (fileStamp, error) {
	ci, err := os.Stat(cs.certFile)
	if err != nil {
		return fileStamp{}, err
	}
	ki, err := os.Stat(cs.keyFile)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{certMod: ci.ModTime(), keyMod: ki.ModTime(), certSize: ci.Size(), keySize: ki.Size()}, nil
}

// reload loads the files again. On failure the previous certificate stays
// and the error is returned (and logged).
func (cs *certStore) reload(why string) error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.stamp, _ = cs.statFiles()
	cert, err := loadKeyPair(cs.certFile, cs.keyFile)
	if err != nil {
		cs.failed = true
		cs.failures.Add(1)
		cs.log.Error("tls: certificate reload failed, keeping the previous one", "why", why,
			"cert", cs.certFile, "key", cs.keyFile, "err", err)
		return fmt.Errorf("server: reload TLS certificate: %w", err)
	}
	cs.failed = false
	old := cs.cur.Swap(cert)
	cs.loads.Add(1)
	cs.log.Info("tls: certificate loaded", "why", why, "cert", cs.certFile,
		"subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter,
		"changed", old == nil || old.Leaf == nil || !old.Leaf.Equal(cert.Leaf))
	return nil
}

// reloadIfChanged reloads when the files changed since the last attempt,
// or when the last attempt failed (a file may have been half written).
func (cs *certStore) reloadIfChanged() {
	st, err := cs.statFiles()
	cs.mu.Lock()
	changed := err == nil && st != cs.stamp
	retry := cs.failed
	cs.mu.Unlock()
	if changed || (retry && err == nil) {
		cs.reload("file changed")
	}
}

// watch reloads on file changes every interval until stop is closed.
func (cs *certStore) watch(stop <-chan struct{}, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			cs.reloadIfChanged()
		}
	}
}

// certificate is the tls.Config's GetCertificate.
func (cs *certStore) certificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return cs.cur.Load(), nil
}

// figures returns the certificate's figures for /metrics.
func (cs *certStore) figures() *metrics.TLS {
	t := &metrics.TLS{Reloads: cs.loads.Load(), ReloadErrors: cs.failures.Load()}
	if c := cs.cur.Load(); c != nil && c.Leaf != nil {
		t.NotAfter = c.Leaf.NotAfter
	}
	return t
}

// tlsConfig returns the server's TLS configuration: TLS 1.2 and later,
// Go's default cipher suites and key exchanges (forward secrecy only, AEAD
// ciphers, X25519 and the post-quantum hybrid first), HTTP/1.1 only, since
// WebSocket upgrades need it, and the current certificate.
func (cs *certStore) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"http/1.1"},
		GetCertificate: cs.certificate,
	}
}

// ReloadTLS loads the TLS certificate and key files again, for the
// handshakes that follow; established connections keep theirs. On
// failure the previous certificate stays in use and the error says why.
// Without TLS it does nothing and returns nil. Run calls it on SIGHUP.
func (s *Server) ReloadTLS() error {
	if s.certs == nil {
		return nil
	}
	return s.certs.reload("reload requested")
}

// validateOps checks the operations settings: the admin address and what
// needs it, the admin password, and the TLS files (which it loads).
func (c Config) validateOps() []error {
	var errs []error
	bad := func(field string, value any, reason string) {
		errs = append(errs, &FieldError{Field: field, Value: value, Reason: reason})
	}
	if c.AdminAddr != "" {
		switch _, _, err := net.SplitHostPort(c.AdminAddr); {
		case err != nil:
			bad("AdminAddr", c.AdminAddr, "want host:port or :port, e.g. 127.0.0.1:9090")
		case c.AdminAddr == c.Addr:
			bad("AdminAddr", c.AdminAddr, "is the main address; the admin address must be another one")
		case c.AdminAddr == c.APIAddr:
			bad("AdminAddr", c.AdminAddr, "is the API address; the admin address must be another one")
		}
	}
	if c.Admin {
		if c.AdminAddr == "" {
			bad("Admin", true, "the admin page is served only on the admin address: set AdminAddr too")
		}
		if len(c.AdminPassword) < MinAdminPasswordLen {
			bad("AdminPassword", maskSecret(c.AdminPassword), fmt.Sprintf("the admin page needs a password of at least %d characters", MinAdminPasswordLen))
		}
	}
	if c.Pprof && c.AdminAddr == "" {
		bad("Pprof", true, "the profiler is served only on the admin address: set AdminAddr too")
	}
	switch {
	case c.TLSCertFile == "" && c.TLSKeyFile == "":
	case c.TLSCertFile == "":
		bad("TLSCertFile", `""`, "TLS needs both a certificate and a key file: the key file is set, the certificate is not")
	case c.TLSKeyFile == "":
		bad("TLSKeyFile", `""`, "TLS needs both a certificate and a key file: the certificate is set, the key file is not")
	default:
		if _, err := loadKeyPair(c.TLSCertFile, c.TLSKeyFile); err != nil {
			bad("TLSCertFile", c.TLSCertFile, "cannot load the certificate and key: "+err.Error())
		}
	}
	return errs
}

// maskSecret shows whether a secret is set without showing it.
func maskSecret(v string) string {
	if v == "" {
		return `""`
	}
	return "<redacted>"
}
