package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeCert writes a self-signed certificate and its key into dir and
// returns their paths.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	return writeCertCN(t, dir, "localhost")
}

// writeCertCN is writeCert with the subject's common name.
func writeCertCN(t *testing.T, dir, cn string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	return certFile, keyFile
}

// TestOpsPrecedence checks each operations setting from the file, the
// environment and the command line, in that order of strength.
func TestOpsPrecedence(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir)
	file := writeFile(t, "wsgate.yaml", `
http_server:
  internal_port: 9100
  tls:
    cert_pem: `+certFile+`
    key_pem: `+keyFile+`
prometheus:
  enabled: false
admin:
  enabled: true
  password: file-password
debug:
  enabled: true
`)
	o := mustParse(t, []string{"-config", file}, env())
	c := o.server
	if c.AdminAddr != ":9100" || !c.DisableMetrics || !c.Admin || c.AdminPassword != "file-password" || !c.Pprof ||
		c.TLSCertFile != certFile || c.TLSKeyFile != keyFile {
		t.Errorf("from the file: %+v", c)
	}
	if e := effective(t, o).server; e.AdminAddr != "127.0.0.1:9100" {
		t.Errorf("effective admin address %q, want the loopback", e.AdminAddr)
	}

	o = mustParse(t, []string{"-config", file}, env("WSGATE_ADMIN_ADDR", "0.0.0.0:9200", "WSGATE_METRICS", "true",
		"WSGATE_ADMIN_PASSWORD", "env-password", "WSGATE_PPROF", "false"))
	c = o.server
	if c.AdminAddr != "0.0.0.0:9200" || c.DisableMetrics || c.AdminPassword != "env-password" || c.Pprof {
		t.Errorf("environment over the file: %+v", c)
	}

	cert2, key2 := writeCert(t, t.TempDir())
	o = mustParse(t, []string{"-config", file, "-admin-addr", "127.0.0.2:9300", "-metrics=false", "-admin=false",
		"-admin-password", "flag-password", "-tls-cert", cert2, "-tls-key", key2},
		env("WSGATE_ADMIN_ADDR", "0.0.0.0:9200", "WSGATE_METRICS", "true"))
	c = o.server
	if c.AdminAddr != "127.0.0.2:9300" || !c.DisableMetrics || c.Admin || c.AdminPassword != "flag-password" || c.TLSCertFile != cert2 || c.TLSKeyFile != key2 {
		t.Errorf("flags over everything: %+v", c)
	}

	// Relative paths in the file are relative to the file; tls.enabled
	// false turns TLS off.
	rel := writeFile(t, "x.yaml", "")
	os.Rename(certFile, filepath.Join(filepath.Dir(rel), "c.pem"))
	os.Rename(keyFile, filepath.Join(filepath.Dir(rel), "k.pem"))
	os.WriteFile(rel, []byte("http_server:\n  tls:\n    cert_pem: c.pem\n    key_pem: k.pem\n"), 0o600)
	t.Chdir(t.TempDir())
	if c := mustParse(t, []string{"-config", rel}, env()).server; c.TLSCertFile != filepath.Join(filepath.Dir(rel), "c.pem") {
		t.Errorf("relative cert_pem became %q", c.TLSCertFile)
	}
	os.WriteFile(rel, []byte("http_server:\n  tls:\n    enabled: false\n    cert_pem: c.pem\n    key_pem: k.pem\n"), 0o600)
	if c := mustParse(t, []string{"-config", rel}, env()).server; c.TLSCertFile != "" {
		t.Errorf("tls.enabled false still serves TLS with %q", c.TLSCertFile)
	}
}

// TestOpsErrors checks that an invalid operations setting is named as it
// was given.
func TestOpsErrors(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir)
	for _, tc := range []struct {
		args   []string
		getenv func(string) string
		want   string
	}{
		{[]string{"-admin", "-admin-password", "long-enough"}, env(), "invalid -admin true: the admin page is served only on the admin address"},
		{[]string{"-admin", "-admin-addr", ":9090"}, env("WSGATE_ADMIN_PASSWORD", "short"), "invalid WSGATE_ADMIN_PASSWORD <redacted>: the admin page needs a password of at least 8 characters"},
		{[]string{"-pprof"}, env(), "invalid -pprof true: the profiler is served only on the admin address"},
		{[]string{"-admin-addr", "nowhere"}, env(), "invalid value \"nowhere\" for flag -admin-addr"},
		{[]string{"-tls-cert", certFile}, env(), "invalid -tls-key \"\": TLS needs both a certificate and a key file"},
		{[]string{"-tls-cert", keyFile, "-tls-key", keyFile}, env(), "invalid -tls-cert " + keyFile + ": cannot load the certificate and key"},
		{nil, env("WSGATE_TLS_CERT", "-----BEGIN CERTIFICATE-----\nMII", "WSGATE_TLS_KEY", keyFile), "invalid WSGATE_TLS_CERT \"-----BEGIN CERTIFICATE"},
		{[]string{"-metrics=maybe"}, env(), "invalid boolean value \"maybe\" for -metrics"},
	} {
		got := parseErr(t, tc.args, tc.getenv)
		if !strings.Contains(got, tc.want) {
			t.Errorf("%q %v:\n got %q\nwant %q", tc.args, tc.getenv("WSGATE_ADMIN_PASSWORD"), got, tc.want)
		}
		if strings.Contains(got, "short") && strings.Contains(tc.want, "password") {
			t.Errorf("the error shows the password: %q", got)
		}
	}
	file := writeFile(t, "wsgate.yaml", "http_server:\n  internal_address: 10.0.0.1\n")
	if got := parseErr(t, []string{"-config", file}, env()); !strings.Contains(got, "invalid http_server.internal_address 10.0.0.1:0 (in "+file+"): an admin address needs a port") {
		t.Errorf("address without a port: %q", got)
	}
}

// TestPrintConfigOps checks that -print-config shows every operations
// setting, the admin password masked.
func TestPrintConfigOps(t *testing.T) {
	certFile, keyFile := writeCert(t, t.TempDir())
	o := mustParse(t, []string{"-admin-addr", ":9090", "-admin", "-pprof", "-tls-cert", certFile, "-tls-key", keyFile},
		env("WSGATE_ADMIN_PASSWORD", "very-secret-password"))
	var out bytes.Buffer
	if err := printConfig(o, &out); err != nil {
		t.Fatal(err)
	}
	printed := out.String()
	if strings.Contains(printed, "very-secret-password") {
		t.Fatalf("-print-config shows the admin password:\n%s", printed)
	}
	for _, want := range []string{
		"internal_address: 127.0.0.1", "internal_port: 9090",
		"cert_pem: " + certFile, "key_pem: " + keyFile,
		"prometheus:\n  enabled: true", "admin:\n  enabled: true\n  password: " + secretMask, "debug:\n  enabled: true",
	} {
		if !strings.Contains(printed, want) {
			t.Errorf("-print-config lacks %q:\n%s", want, printed)
		}
	}
	// The output is a config file that gives the same configuration back.
	path := writeFile(t, "printed.yaml", strings.Replace(printed, secretMask, "very-secret-password", 1))
	again := mustParse(t, []string{"-config", path}, env())
	if e1, e2 := effective(t, o).server, effective(t, again).server; e1.AdminAddr != e2.AdminAddr || e1.TLSCertFile != e2.TLSCertFile || e1.Pprof != e2.Pprof || e1.Admin != e2.Admin {
		t.Errorf("printed config parses to %+v, want %+v", e2, e1)
	}
}

// TestSIGHUPReloadsTheCertificate runs wsgate with TLS, replaces the
// certificate files and sends SIGHUP: new handshakes get the new
// certificate, and the process goes on (SIGHUP would end a Go program
// that does not handle it).
func TestSIGHUPReloadsTheCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeCertCN(t, dir, "before")
	p := startProcess(t, "-tls-cert", certFile, "-tls-key", keyFile)
	served := func() string {
		c, err := tls.Dial("tcp", p.addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("TLS dial: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if cn := served(); cn != "before" {
		t.Fatalf("served %q", cn)
	}
	writeCertCN(t, dir, "after")
	p.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for served() != "after" {
		if time.Now().After(deadline) {
			t.Fatal("the certificate was not reloaded after SIGHUP")
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0\n%s", code, p.stderr)
	}
	if !strings.Contains(p.stderr.String(), `"why":"reload requested"`) {
		t.Errorf("no reload line in the log:\n%s", p.stderr)
	}
}

// TestSystemdUnit checks docs/systemd/wsgate.service with systemd-analyze
// verify (skipped where the tool is missing), with ExecStart pointed at
// this test binary, and that the command line it runs parses, with the
// example config file in place of /etc/wsgate/wsgate.yaml.
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile("../../docs/systemd/wsgate.service")
	if err != nil {
		t.Fatal(err)
	}
	var execStart string
	for _, line := range strings.Split(string(unit), "\n") {
		if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
			execStart = v
		}
	}
	fields := strings.Fields(execStart)
	if len(fields) < 2 || fields[0] != "/usr/local/bin/wsgate" {
		t.Fatalf("ExecStart=%q", execStart)
	}
	args := fields[1:]
	for i, a := range args {
		if a == "/etc/wsgate/wsgate.yaml" {
			args[i] = "../../docs/wsgate.example.yaml"
		}
	}
	mustParse(t, args, env())

	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not found: the unit file was not verified")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "wsgate.service")
	os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/wsgate", exe)), 0o644)
	out, err := exec.Command(tool, "verify", "--man=no", path).CombinedOutput()
	// verify exits 0 on unknown keys and bad values, which it only prints.
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
