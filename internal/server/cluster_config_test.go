package server

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/broker/natsbroker"
	"github.com/wsgate/wsgate/hub"
)

func TestClusterConfigDefaults(t *testing.T) {
	three := []string{"10.0.0.1:6222", "10.0.0.2:6222", "10.0.0.3:6222"}
	for _, tt := range []struct {
		name         string
		in           ClusterConfig
		mode         string
		replicas     int
		embeddedName string // the embedded cluster's name after defaults
	}{
		{"zero: memory", ClusterConfig{}, brokerMemory, 0, ""},
		{"one URL", ClusterConfig{NATS: natsbroker.Options{URLs: "nats://a:4222"}}, brokerNATS, 1, ""},
		{"two URLs", ClusterConfig{NATS: natsbroker.Options{URLs: "nats://a:4222, b:4222"}}, brokerNATS, 1, ""},
		{"three URLs", ClusterConfig{NATS: natsbroker.Options{URLs: "nats://a:4222,nats://b:4222,tls://c:4222"}}, brokerNATS, 3, ""},
		{"replicas given", ClusterConfig{NATS: natsbroker.Options{URLs: "nats://a:4222,nats://b:4222,nats://c:4222", Replicas: 1}}, brokerNATS, 1, ""},
		{"embedded alone", ClusterConfig{Embedded: &natsbroker.EmbeddedOptions{}}, brokerEmbedded, 1, DefaultClusterName},
		{"embedded, own address among the routes", ClusterConfig{Embedded: &natsbroker.EmbeddedOptions{ClusterAddr: "10.0.0.1:6222", Routes: three}}, brokerEmbedded, 3, DefaultClusterName},
		{"embedded, routes to the others", ClusterConfig{Embedded: &natsbroker.EmbeddedOptions{ClusterAddr: "10.0.0.1:6222", Routes: three[1:]}}, brokerEmbedded, 3, DefaultClusterName},
		{"embedded, wildcard address advertised", ClusterConfig{Embedded: &natsbroker.EmbeddedOptions{ClusterAddr: "0.0.0.0:6222", ClusterAdvertise: "10.0.0.1:6222", Routes: three, ClusterName: "prod"}}, brokerEmbedded, 3, "prod"},
		{"embedded, two nodes", ClusterConfig{Embedded: &natsbroker.EmbeddedOptions{ClusterAddr: "10.0.0.1:6222", Routes: []string{"nats-route://u:p@10.0.0.2:6222"}}}, brokerEmbedded, 1, DefaultClusterName},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var before *natsbroker.EmbeddedOptions
			if tt.in.Embedded != nil {
				c := *tt.in.Embedded
				before = &c
			}
			c, err := Config{Cluster: tt.in}.Effective()
			if err != nil {
				t.Fatal(err)
			}
			got := c.Cluster
			if got.mode() != tt.mode || got.NATS.Replicas != tt.replicas {
				t.Errorf("mode %s replicas %d, want %s and %d", got.mode(), got.NATS.Replicas, tt.mode, tt.replicas)
			}
			if tt.mode != brokerMemory && (got.NATS.Name != DefaultNATSName || got.NATS.Prefix != DefaultNATSPrefix) {
				t.Errorf("name %q prefix %q, want the defaults", got.NATS.Name, got.NATS.Prefix)
			}
			if tt.mode == brokerMemory && !reflect.DeepEqual(got, ClusterConfig{}) {
				t.Errorf("memory mode filled in %+v", got)
			}
			if tt.in.Embedded != nil {
				if got.Embedded.ClusterName != tt.embeddedName {
					t.Errorf("cluster name %q, want %q", got.Embedded.ClusterName, tt.embeddedName)
				}
				if !reflect.DeepEqual(tt.in.Embedded, before) {
					t.Errorf("the caller's EmbeddedOptions changed: %+v", tt.in.Embedded)
				}
			}
		})
	}
}

func TestClusterConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		name  string
		cfg   Config
		field string
	}{
		{"broker and cluster", Config{Broker: broker.NewMemory(broker.MemoryConfig{}), Cluster: ClusterConfig{NATS: natsbroker.Options{URLs: "nats://a:4222"}}}, "Cluster.NATS"},
		{"bad scheme", Config{Cluster: ClusterConfig{NATS: natsbroker.Options{URLs: "nats://a:4222,http://b:4222"}}}, "Cluster.NATS.URLs"},
		{"no host", Config{Cluster: ClusterConfig{NATS: natsbroker.Options{URLs: "nats://:4222"}}}, "Cluster.NATS.URLs"},
		{"replicas", Config{Cluster: ClusterConfig{NATS: natsbroker.Options{URLs: "nats://a:4222", Replicas: 6}}}, "Cluster.NATS.Replicas"},
		{"prefix", Config{Cluster: ClusterConfig{NATS: natsbroker.Options{URLs: "nats://a:4222", Prefix: "a.b"}}}, "Cluster.NATS.Prefix"},
		{"embedded with URLs", Config{Cluster: ClusterConfig{NATS: natsbroker.Options{URLs: "nats://a:4222"}, Embedded: &natsbroker.EmbeddedOptions{}}}, "Cluster.NATS.URLs"},
		{"embedded with a token", Config{Cluster: ClusterConfig{NATS: natsbroker.Options{Token: "t"}, Embedded: &natsbroker.EmbeddedOptions{}}}, "Cluster.NATS.Token"},
		{"embedded with TLS", Config{Cluster: ClusterConfig{NATS: natsbroker.Options{TLSCAFile: "ca.pem"}, Embedded: &natsbroker.EmbeddedOptions{}}}, "Cluster.NATS.TLS"},
		{"cluster address without routes", Config{Cluster: ClusterConfig{Embedded: &natsbroker.EmbeddedOptions{ClusterAddr: "127.0.0.1:6222"}}}, "Cluster.Embedded.Routes"},
		{"routes without a cluster address", Config{Cluster: ClusterConfig{Embedded: &natsbroker.EmbeddedOptions{Routes: []string{"a:1"}}}}, "Cluster.Embedded.ClusterAddr"},
		{"bad route", Config{Cluster: ClusterConfig{Embedded: &natsbroker.EmbeddedOptions{ClusterAddr: ":6222", Routes: []string{"a"}}}}, "Cluster.Embedded.Routes"},
		{"bad client address", Config{Cluster: ClusterConfig{Embedded: &natsbroker.EmbeddedOptions{ClientAddr: "4222"}}}, "Cluster.Embedded.ClientAddr"},
		{"more replicas than servers", Config{Cluster: ClusterConfig{NATS: natsbroker.Options{Replicas: 3}, Embedded: &natsbroker.EmbeddedOptions{}}}, "Cluster.NATS.Replicas"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.cfg.Effective()
			fes := FieldErrors(err)
			if len(fes) != 1 || fes[0].Field != tt.field {
				t.Fatalf("errors %v, want one for %s", err, tt.field)
			}
			if _, err := New(tt.cfg, nil); err == nil {
				t.Error("New accepted the config")
			}
		})
	}
	// A password in a URL is not repeated in the error.
	_, err := Config{Cluster: ClusterConfig{NATS: natsbroker.Options{URLs: "ftp://u:pw-secret@a:4222"}}}.Effective()
	if err == nil || strings.Contains(err.Error(), "pw-secret") {
		t.Errorf("error %v", err)
	}
}

func TestRedactURLs(t *testing.T) {
	for in, want := range map[string]string{
		"nats://a:4222":                           "nats://a:4222",
		"nats://u:secret@a:4222, nats://b:4222":   "nats://u:xxxxx@a:4222,nats://b:4222",
		"nats://token-only@a:4222":                "nats://token-only@a:4222",
		"u:secret@a:4222":                         "xxxxx@a:4222",
		"nats-route://route:secret@10.0.0.1:6222": "nats-route://route:xxxxx@10.0.0.1:6222",
	} {
		if got := RedactURLs(in); got != want {
			t.Errorf("RedactURLs(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestClusterPresenceRefresh: the hub refreshes presence entries three
// times per broker presence TTL, at most as often as its default.
func TestClusterPresenceRefresh(t *testing.T) {
	for ttl, want := range map[time.Duration]time.Duration{
		0:               20 * time.Second, // natsbroker's 60s
		3 * time.Second: time.Second,
		time.Hour:       hub.DefaultPresenceUpdateInterval,
	} {
		s := &Server{cfg: Config{Cluster: ClusterConfig{NATS: natsbroker.Options{URLs: "nats://a:4222", PresenceTTL: ttl}}}}
		var hc hub.Config
		s.clusterHubConfig(&hc)
		if hc.PresenceUpdateInterval != want {
			t.Errorf("presence TTL %v: refresh every %v, want %v", ttl, hc.PresenceUpdateInterval, want)
		}
	}
	var hc hub.Config
	(&Server{}).clusterHubConfig(&hc)
	if hc.PresenceUpdateInterval != 0 {
		t.Errorf("the memory broker changed the hub's presence refresh to %v", hc.PresenceUpdateInterval)
	}
}

// TestClusterLogsNoSecrets: the startup log names the broker's mode and
// where it connects, and no password or token.
func TestClusterLogsNoSecrets(t *testing.T) {
	t.Parallel()
	n := startNATS(t)
	cfg := clusterConfig("nats://alice:url-secret-1@" + n.opts.ClientAddr)
	cfg.Cluster.NATS.Token = "token-secret-2"
	ts := startServer(t, cfg)
	rec := ts.logs.waitLog(t, "broker", map[string]any{"mode": "nats"})
	if rec["urls"] != "nats://alice:xxxxx@"+n.opts.ClientAddr || rec["replicas"] != float64(1) || rec["prefix"] != "wsgate" {
		t.Errorf("broker line %v", rec)
	}
	if auth, _ := rec["auth"].([]any); len(auth) != 2 {
		t.Errorf("broker line's auth %v, want token and url", rec["auth"])
	}
	ts.logs.mu.Lock()
	all := ts.logs.buf.String()
	ts.logs.mu.Unlock()
	for _, secret := range []string{"url-secret-1", "token-secret-2"} {
		if strings.Contains(all, secret) {
			t.Errorf("the log shows %q", secret)
		}
	}
}
