package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/broker/natsbroker"
	"github.com/wsgate/wsgate/internal/server"
)

func TestParseBrokerSettings(t *testing.T) {
	routes := []string{"127.0.0.1:6221", "127.0.0.1:6222", "127.0.0.1:6223"}
	file := writeFile(t, "wsgate.yaml", `
broker:
  type: nats
  nats:
    url: nats://file:4222
    prefix: fromfile
    token: file-token
`)
	urlOnly := writeFile(t, "url.yaml", "broker:\n  nats:\n    url: nats://a:4222,nats://b:4222,nats://c:4222\n")
	embeddedFile := writeFile(t, "embedded.yaml", `
broker:
  embedded:
    enabled: true
    name: n1
    cluster_address: 127.0.0.1:6221
    routes: [127.0.0.1:6221, 127.0.0.1:6222, 127.0.0.1:6223]
    store_dir: /var/lib/wsgate/n1
    cluster_user: route
    cluster_password: file-route-secret
    client_address: 127.0.0.1:4222
    sync_always: true
`)
	tests := []struct {
		name   string
		args   []string
		getenv func(string) string
		want   server.ClusterConfig
	}{
		{"default: memory", nil, env(), server.ClusterConfig{}},
		{"-broker memory", []string{"-broker=memory"}, env(), server.ClusterConfig{}},
		{"NATS options without NATS are unused", []string{"-broker-prefix=x", "-cluster-name=y"}, env(), server.ClusterConfig{}},
		{"one URL", []string{"-broker", "nats://127.0.0.1:4222"}, env(), server.ClusterConfig{
			NATS: natsbroker.Options{URLs: "nats://127.0.0.1:4222", Name: "wsgate", Prefix: "wsgate", Replicas: 1},
		}},
		{"three URLs: three replicas", []string{"-broker=nats://a:4222, nats://b:4222,nats://c:4222", "-broker-name=node1"}, env(), server.ClusterConfig{
			NATS: natsbroker.Options{URLs: "nats://a:4222, nats://b:4222,nats://c:4222", Name: "node1", Prefix: "wsgate", Replicas: 3},
		}},
		{"replicas and credentials from the environment", nil, env("WSGATE_BROKER", "nats://a:4222", "WSGATE_BROKER_REPLICAS", "2",
			"WSGATE_BROKER_USER", "u", "WSGATE_BROKER_PASSWORD", "env-password", "WSGATE_BROKER_CREDENTIALS", "/etc/nats.creds", "WSGATE_BROKER_PREFIX", "app_1"), server.ClusterConfig{
			NATS: natsbroker.Options{URLs: "nats://a:4222", Name: "wsgate", Prefix: "app_1", Replicas: 2, User: "u", Password: "env-password", CredentialsFile: "/etc/nats.creds"},
		}},
		{"file", []string{"-config", file}, env(), server.ClusterConfig{
			NATS: natsbroker.Options{URLs: "nats://file:4222", Name: "wsgate", Prefix: "fromfile", Replicas: 1, Token: "file-token"},
		}},
		{"environment over the file", []string{"-config", file}, env("WSGATE_BROKER", "nats://env:4222", "WSGATE_BROKER_TOKEN", "env-token"), server.ClusterConfig{
			NATS: natsbroker.Options{URLs: "nats://env:4222", Name: "wsgate", Prefix: "fromfile", Replicas: 1, Token: "env-token"},
		}},
		{"flag over both: memory", []string{"-config", file, "-broker=memory"}, env("WSGATE_BROKER", "nats://env:4222"), server.ClusterConfig{}},
		{"a URL alone means nats", []string{"-config", urlOnly}, env(), server.ClusterConfig{
			NATS: natsbroker.Options{URLs: "nats://a:4222,nats://b:4222,nats://c:4222", Name: "wsgate", Prefix: "wsgate", Replicas: 3},
		}},
		{"embedded, standalone", []string{"-cluster-embedded"}, env(), server.ClusterConfig{
			NATS:     natsbroker.Options{Name: "wsgate", Prefix: "wsgate", Replicas: 1},
			Embedded: &natsbroker.EmbeddedOptions{ClusterName: "wsgate"},
		}},
		{"embedded cluster of three", []string{"-cluster-embedded", "-cluster-addr=127.0.0.1:6221", "-cluster-routes=" + strings.Join(routes, ","),
			"-cluster-store-dir=/data/n1", "-cluster-node-name=n1", "-cluster-name=prod"}, env("WSGATE_CLUSTER_PASSWORD", "env-route-secret", "WSGATE_CLUSTER_USER", "route"), server.ClusterConfig{
			NATS: natsbroker.Options{Name: "wsgate", Prefix: "wsgate", Replicas: 3},
			Embedded: &natsbroker.EmbeddedOptions{Name: "n1", ClusterName: "prod", ClusterAddr: "127.0.0.1:6221", Routes: routes,
				StoreDir: "/data/n1", ClusterUser: "route", ClusterPassword: "env-route-secret"},
		}},
		{"embedded, two routes besides this node's", []string{"-cluster-embedded", "-cluster-addr=127.0.0.1:6221", "-cluster-routes=127.0.0.1:6222,127.0.0.1:6223"}, env(), server.ClusterConfig{
			NATS:     natsbroker.Options{Name: "wsgate", Prefix: "wsgate", Replicas: 3},
			Embedded: &natsbroker.EmbeddedOptions{ClusterName: "wsgate", ClusterAddr: "127.0.0.1:6221", Routes: []string{"127.0.0.1:6222", "127.0.0.1:6223"}},
		}},
		{"embedded from the file, flag over it", []string{"-config", embeddedFile, "-cluster-sync-always=false"}, env(), server.ClusterConfig{
			NATS: natsbroker.Options{Name: "wsgate", Prefix: "wsgate", Replicas: 3},
			Embedded: &natsbroker.EmbeddedOptions{Name: "n1", ClusterName: "wsgate", ClusterAddr: "127.0.0.1:6221", Routes: routes,
				StoreDir: "/var/lib/wsgate/n1", ClusterUser: "route", ClusterPassword: "file-route-secret", ClientAddr: "127.0.0.1:4222"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := effective(t, mustParse(t, tt.args, tt.getenv)).server.Cluster
			if !reflect.DeepEqual(got.NATS, tt.want.NATS) {
				t.Errorf("NATS options:\n got %+v\nwant %+v", got.NATS, tt.want.NATS)
			}
			if !reflect.DeepEqual(got.Embedded, tt.want.Embedded) {
				t.Errorf("embedded options:\n got %+v\nwant %+v", got.Embedded, tt.want.Embedded)
			}
		})
	}
}

func TestBrokerSettingErrors(t *testing.T) {
	typo := writeFile(t, "typo.yaml", "broker:\n  type: redis\n")
	natsNoURL := writeFile(t, "nourl.yaml", "broker:\n  type: nats\n")
	badURL := writeFile(t, "badurl.yaml", "broker:\n  nats:\n    url: http://x:4222\n")
	for _, tt := range []struct {
		name   string
		args   []string
		getenv func(string) string
		want   []string // in the error
	}{
		{"bad scheme", []string{"-broker=http://127.0.0.1:4222"}, env(), []string{"invalid -broker http://127.0.0.1:4222", "want nats, tls, ws or wss"}},
		{"bad scheme from the environment, password hidden", nil, env("WSGATE_BROKER", "ftp://user:pw-secret@127.0.0.1:4222"), []string{"invalid WSGATE_BROKER", "xxxxx"}},
		{"bad scheme in the file", []string{"-config", badURL}, env(), []string{"broker.type, broker.nats.url", "badurl.yaml"}},
		{"unknown type", []string{"-config", typo}, env(), []string{`type "redis"`, "want memory or nats", "typo.yaml"}},
		{"nats without URLs", []string{"-config", natsNoURL}, env(), []string{"needs the NATS servers' URLs"}},
		{"embedded and URLs", []string{"-cluster-embedded", "-broker=nats://a:4222"}, env(), []string{"invalid -cluster-embedded", "use one or the other"}},
		{"embedded with a token", []string{"-cluster-embedded"}, env("WSGATE_BROKER_TOKEN", "t"), []string{"invalid WSGATE_BROKER_TOKEN", "in process"}},
		{"cluster address without routes", []string{"-cluster-embedded", "-cluster-addr=127.0.0.1:6222"}, env(), []string{"invalid -cluster-routes", "needs the routes"}},
		{"routes without a cluster address", []string{"-cluster-embedded", "-cluster-routes=127.0.0.1:6222"}, env(), []string{"invalid -cluster-addr", "need a cluster address"}},
		{"bad cluster address", []string{"-cluster-embedded", "-cluster-addr=6222", "-cluster-routes=a:1"}, env(), []string{"invalid -cluster-addr 6222", "host:port"}},
		{"bad route", []string{"-cluster-embedded", "-cluster-addr=:6222", "-cluster-routes=a:1,nohost"}, env(), []string{"invalid -cluster-routes nohost"}},
		{"too many replicas", []string{"-broker=nats://a:4222", "-broker-replicas=7"}, env(), []string{"invalid -broker-replicas 7", "between 1 and 5"}},
		{"more replicas than embedded servers", []string{"-cluster-embedded", "-broker-replicas=3"}, env(), []string{"invalid -broker-replicas 3", "more than the 1 NATS servers"}},
		{"negative replicas", []string{"-broker=nats://a:4222", "-broker-replicas=-1"}, env(), []string{"invalid -broker-replicas -1"}},
		{"bad prefix", []string{"-broker=nats://a:4222", "-broker-prefix=a.b"}, env(), []string{"invalid -broker-prefix a.b", "one NATS subject token"}},
		{"CA file missing", []string{"-broker=nats://a:4222", "-broker-tls-ca=/nonexistent/ca.pem"}, env(), []string{"invalid -broker-tls-ca", "readable PEM file"}},
		{"certificate without key", []string{"-broker=nats://a:4222", "-broker-tls-cert=" + writeFile(t, "c.pem", "x")}, env(), []string{"invalid -broker-tls-cert", "needs its key"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out := parseErr(t, tt.args, tt.getenv)
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("error %q lacks %q", out, w)
				}
			}
			if strings.Contains(out, "pw-secret") {
				t.Errorf("the error shows a password: %q", out)
			}
		})
	}
}

func TestPrintConfigBroker(t *testing.T) {
	t.Run("secrets masked", func(t *testing.T) {
		o := mustParse(t, []string{"-broker=nats://alice:url-secret@127.0.0.1:4222,nats://127.0.0.1:4223", "-print-config"},
			env("WSGATE_BROKER_TOKEN", "token-secret", "WSGATE_BROKER_PASSWORD", "password-secret"))
		var out bytes.Buffer
		if err := printConfig(o, &out); err != nil {
			t.Fatal(err)
		}
		printed := out.String()
		for _, secret := range []string{"url-secret", "token-secret", "password-secret"} {
			if strings.Contains(printed, secret) {
				t.Errorf("-print-config shows %q:\n%s", secret, printed)
			}
		}
		if !strings.Contains(printed, "url: nats://alice:xxxxx@127.0.0.1:4222,nats://127.0.0.1:4223") {
			t.Errorf("the URLs are not printed with their passwords masked:\n%s", printed)
		}
	})
	// A configuration without secrets reads back as itself.
	for _, args := range [][]string{
		{"-broker=nats://a:4222,nats://b:4222", "-broker-name=n1", "-broker-prefix=p", "-broker-credentials=/x.creds", "-broker-user=u"},
		{"-cluster-embedded", "-cluster-addr=0.0.0.0:6222", "-cluster-advertise=10.0.0.1:6222", "-cluster-routes=10.0.0.1:6222,10.0.0.2:6222,10.0.0.3:6222",
			"-cluster-node-name=n1", "-cluster-store-dir=/data", "-cluster-client-addr=127.0.0.1:4222", "-cluster-sync-always", "-broker-replicas=1"},
	} {
		t.Run(args[0], func(t *testing.T) {
			want := effective(t, mustParse(t, args, env()))
			var out bytes.Buffer
			if err := printConfig(want, &out); err != nil {
				t.Fatal(err)
			}
			path := writeFile(t, "printed.yaml", out.String())
			got := effective(t, mustParse(t, []string{"-config", path}, env()))
			if !reflect.DeepEqual(got.server.Cluster, want.server.Cluster) {
				t.Errorf("printed config reads back as\n %+v\nwant %+v\nprinted:\n%s", got.server.Cluster, want.server.Cluster, out.String())
			}
		})
	}
}

// TestBrokerTLS: the CA, certificate and key, as files or as PEM text in
// the config file, make the NATS connection's TLS configuration; the key
// is masked by -print-config.
func TestBrokerTLS(t *testing.T) {
	caPEM, certPEM, keyPEM := testCertificates(t)
	dir := t.TempDir()
	ca, cert, key := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for p, data := range map[string][]byte{ca: caPEM, cert: certPEM, key: keyPEM} {
		writeFileAt(t, p, data)
	}
	inline := func(b []byte) string { return strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\\n") }
	file := writeFile(t, "tls.yaml", "broker:\n  nats:\n    url: tls://127.0.0.1:4222\n    tls:\n      server_ca_pem: \""+inline(caPEM)+
		"\"\n      cert_pem: cert.pem\n      key_pem: \""+inline(keyPEM)+"\"\n")
	writeFileAt(t, filepath.Join(filepath.Dir(file), "cert.pem"), certPEM)
	for name, args := range map[string][]string{
		"flags": {"-broker=nats://127.0.0.1:4222", "-broker-tls-ca=" + ca, "-broker-tls-cert=" + cert, "-broker-tls-key=" + key},
		"file":  {"-config", file},
	} {
		t.Run(name, func(t *testing.T) {
			o := mustParse(t, args, env())
			tc := o.server.Cluster.NATS.TLSConfig
			if tc == nil || tc.RootCAs == nil || len(tc.Certificates) != 1 || tc.MinVersion == 0 {
				t.Fatalf("TLS config %+v", tc)
			}
			var out bytes.Buffer
			if err := printConfig(o, &out); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(out.String(), "PRIVATE KEY") || !strings.Contains(out.String(), "key_pem: "+secretMask) {
				t.Errorf("the key is not masked:\n%s", out.String())
			}
		})
	}
}

func writeFileAt(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// testCertificates returns a self-signed CA, and a client certificate it
// signed with its key, as PEM.
func testCertificates(t *testing.T) (ca, cert, key []byte) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "wsgate"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caTmpl, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}
