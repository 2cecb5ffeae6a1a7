package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/hub"
	"github.com/wsgate/wsgate/internal/server"
)

// demoOptions is the channel configuration of the demo flags.
func demoChannels(anonymous bool) *hub.ChannelConfig {
	c := defaultConfig().Channels
	c.Default = server.DefaultChannelOptions(server.ChannelDefaults{
		HistorySize: 100, HistoryTTL: 5 * time.Minute, Presence: true, AllowPublish: true,
	}, anonymous)
	return c
}

func TestParseHubSettings(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		getenv func(string) string
		change func(*server.Config)
	}{
		{"demo flags", strings.Fields(server.DemoFlags), env(), func(c *server.Config) {
			c.AllowAnonymous = true
			c.Channels = demoChannels(true)
		}},
		{"demo from the environment", nil, env("WSGATE_ALLOW_ANONYMOUS", "1", "WSGATE_ALLOW_PUBLISH", "true", "WSGATE_PRESENCE", "true",
			"WSGATE_HISTORY_SIZE", "100", "WSGATE_HISTORY_TTL", "5m"), func(c *server.Config) {
			c.AllowAnonymous = true
			c.Channels = demoChannels(true)
		}},
		{"history without anonymous", []string{"-history-size=100", "-history-ttl=5m", "-presence", "-allow-publish"}, env(), func(c *server.Config) {
			c.Channels = demoChannels(false)
		}},
		{"join-leave", []string{"-join-leave"}, env(), func(c *server.Config) {
			c.Channels.Default.JoinLeave, c.Channels.Default.ForcePushJoinLeave = true, true
		}},
		{"anonymous may subscribe", []string{"-allow-anonymous"}, env(), func(c *server.Config) {
			c.AllowAnonymous, c.Channels.Default.AllowSubscribeForAnonymous = true, true
		}},
		{"secret and key", []string{"-token-hmac-secret=s3cret"}, env("WSGATE_API_KEY", "k3y"), func(c *server.Config) {
			c.Tokens.HMACSecret, c.APIKey = "s3cret", "k3y"
		}},
		{"secret from the environment", nil, env("WSGATE_TOKEN_HMAC_SECRET", "s3cret"), func(c *server.Config) {
			c.Tokens.HMACSecret = "s3cret"
		}},
		{"api address", []string{"-api-addr=127.0.0.1:8000"}, env(), func(c *server.Config) { c.APIAddr = "127.0.0.1:8000" }},
		{"api address on every interface", nil, env("WSGATE_API_ADDR", ":8000"), func(c *server.Config) { c.APIAddr = ":8000" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := effective(t, mustParse(t, tt.args, tt.getenv))
			want := options{server: defaultConfig(), logFormat: "text"}
			tt.change(&want.server)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("parseArgs(%q):\n got %+v\nwant %+v", tt.args, got.server.Channels, want.server.Channels)
				t.Errorf("server config:\n got %+v\nwant %+v", got.server, want.server)
			}
		})
	}
}

// TestHubPrecedence: flag > env > file > default for the hub's settings,
// and a key the file sets explicitly wins over what a quick-start flag
// turns on with it.
func TestHubPrecedence(t *testing.T) {
	path := writeFile(t, "wsgate.yaml", `
client:
  token:
    hmac_secret_key: from-file
  allow_anonymous_connect_without_token: true
http_api:
  key: file-key
  port: 9001
channel:
  without_namespace:
    presence: true
    history_size: 10
    history_ttl: 1m
    force_recovery: false
`)
	tests := []struct {
		name   string
		args   []string
		getenv func(string) string
		check  func(t *testing.T, c server.Config)
	}{
		{"file", []string{"-config", path}, env(), func(t *testing.T, c server.Config) {
			d := c.Channels.Default
			if c.Tokens.HMACSecret != "from-file" || c.APIKey != "file-key" || c.APIAddr != "127.0.0.1:9001" || !c.AllowAnonymous {
				t.Errorf("file settings not applied: %+v", c)
			}
			if !d.Presence || !d.AllowPresenceForSubscriber || !d.AllowPresenceForAnonymous || d.HistorySize != 10 {
				t.Errorf("without_namespace %+v", d)
			}
			if d.ForceRecovery || !d.ForcePositioning {
				t.Errorf("force_recovery: false in the file must win over the history's default; positioning follows the history: %+v", d)
			}
		}},
		{"env over file", []string{"-config", path}, env("WSGATE_TOKEN_HMAC_SECRET", "from-env", "WSGATE_PRESENCE", "false",
			"WSGATE_API_ADDR", "10.0.0.1:9002", "WSGATE_ALLOW_ANONYMOUS", "false"), func(t *testing.T, c server.Config) {
			d := c.Channels.Default
			if c.Tokens.HMACSecret != "from-env" || c.APIAddr != "10.0.0.1:9002" || c.AllowAnonymous || d.AllowSubscribeForAnonymous {
				t.Errorf("env settings not applied: %+v", c)
			}
			if d.Presence || d.AllowPresenceForSubscriber {
				t.Errorf("WSGATE_PRESENCE=false over the file: %+v", d)
			}
		}},
		{"flag over env", []string{"-config", path, "-token-hmac-secret=from-flag", "-presence=true", "-history-size=20"},
			env("WSGATE_TOKEN_HMAC_SECRET", "from-env", "WSGATE_PRESENCE", "false", "WSGATE_HISTORY_SIZE", "30"), func(t *testing.T, c server.Config) {
				if c.Tokens.HMACSecret != "from-flag" || !c.Channels.Default.Presence || c.Channels.Default.HistorySize != 20 {
					t.Errorf("flags not applied: %+v %+v", c.Tokens, c.Channels.Default)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, effective(t, mustParse(t, tt.args, tt.getenv)).server)
		})
	}
}

const namespacesYAML = `
channel:
  private_prefix: "-"
  namespace_boundary: "/"
  max_length: 100
  without_namespace:
    allow_subscribe_for_client: false
  namespaces:
    - name: chat
      presence: true
      join_leave: true
      force_push_join_leave: true
      history_size: 50
      history_ttl: 10m
      history_meta_ttl: 48h
      force_positioning: true
      allow_positioning: true
      force_recovery: true
      allow_recovery: true
      allow_subscribe_for_client: true
      allow_subscribe_for_anonymous: true
      allow_publish_for_client: true
      allow_publish_for_subscriber: true
      allow_publish_for_anonymous: true
      allow_presence_for_client: true
      allow_presence_for_subscriber: true
      allow_presence_for_anonymous: true
      allow_history_for_client: true
      allow_history_for_subscriber: true
      allow_history_for_anonymous: true
      allow_user_limited_channels: true
      channel_regex: "^[a-z]+$"
    - name: secret.area
      subscribe_token_required: true
`

// TestNamespacesFromFile: every Centrifugo key of a namespace reaches the
// hub's options, in YAML and in JSON, and -print-config gives them back.
func TestNamespacesFromFile(t *testing.T) {
	want := []hub.Namespace{
		{Name: "chat", ChannelOptions: hub.ChannelOptions{
			Presence: true, JoinLeave: true, ForcePushJoinLeave: true,
			HistorySize: 50, HistoryTTL: 10 * time.Minute, HistoryMetaTTL: 48 * time.Hour,
			ForcePositioning: true, AllowPositioning: true, ForceRecovery: true, AllowRecovery: true,
			AllowSubscribeForClient: true, AllowSubscribeForAnonymous: true,
			AllowPublishForClient: true, AllowPublishForSubscriber: true, AllowPublishForAnonymous: true,
			AllowPresenceForClient: true, AllowPresenceForSubscriber: true, AllowPresenceForAnonymous: true,
			AllowHistoryForClient: true, AllowHistoryForSubscriber: true, AllowHistoryForAnonymous: true,
			AllowUserLimitedChannels: true, ChannelRegex: "^[a-z]+$",
		}},
		{Name: "secret.area", ChannelOptions: hub.ChannelOptions{SubscribeTokenRequired: true}},
	}
	for _, name := range []string{"wsgate.yaml", "wsgate.json"} {
		t.Run(name, func(t *testing.T) {
			content := namespacesYAML
			if strings.HasSuffix(name, ".json") {
				content = yamlToJSON(t, namespacesYAML)
			}
			path := writeFile(t, name, content)
			o := mustParse(t, []string{"-config", path}, env())
			got := effective(t, o).server.Channels
			if !reflect.DeepEqual(got.Namespaces, want) {
				t.Errorf("namespaces\n got %+v\nwant %+v", got.Namespaces, want)
			}
			if got.PrivatePrefix != "-" || got.NamespaceBoundary != "/" || got.MaxLength != 100 || got.Default.AllowSubscribeForClient {
				t.Errorf("channel settings %+v", got)
			}
			// Printed and read back, the same.
			var out bytes.Buffer
			if err := printConfig(o, &out); err != nil {
				t.Fatal(err)
			}
			again := effective(t, mustParse(t, []string{"-config", writeFile(t, name, out.String())}, env())).server.Channels
			if !reflect.DeepEqual(again, got) {
				t.Errorf("printed and read back:\n got %+v\nwant %+v\n%s", again, got, out.String())
			}
		})
	}
}

// TestChannelOptionsSchema: the file's channel options are hub's, one for
// one, so that channelOptionsTo and channelOptionsFrom lose nothing.
func TestChannelOptionsSchema(t *testing.T) {
	file := reflect.TypeFor[channelOptions]()
	opts := reflect.TypeFor[hub.ChannelOptions]()
	n := 0
	for i := range opts.NumField() {
		f := opts.Field(i)
		if !f.IsExported() {
			continue
		}
		n++
		ff, ok := file.FieldByName(f.Name)
		if !ok {
			t.Errorf("the file has no key for hub.ChannelOptions.%s", f.Name)
			continue
		}
		want := f.Type
		if want == reflect.TypeFor[time.Duration]() {
			want = reflect.TypeFor[duration]()
		}
		if ff.Type != reflect.PointerTo(want) {
			t.Errorf("%s is a %v in the file, want *%v", f.Name, ff.Type, want)
		}
	}
	if file.NumField() != n {
		t.Errorf("the file has %d channel options, hub %d", file.NumField(), n)
	}
	// Round trip with every option set.
	o := hub.ChannelOptions{Presence: true, HistorySize: 3, HistoryTTL: time.Minute, ChannelRegex: "x", AllowHistoryForAnonymous: true}
	if got := channelOptionsTo(hub.ChannelOptions{}, channelOptionsFrom(o)); !reflect.DeepEqual(got, o) {
		t.Errorf("round trip: %+v, want %+v", got, o)
	}
}

// TestPrintConfigMasksSecrets: the secrets never appear in -print-config,
// from a flag, the environment or the file; the public keys do.
func TestPrintConfigMasksSecrets(t *testing.T) {
	pubPath, pubPEM := writeKeys(t)
	path := writeFile(t, "wsgate.yaml", "http_api:\n  key: file-api-key\nclient:\n  token:\n    rsa_public_key: "+pubPath+"\n    audience: aud-1\n")
	for _, tt := range []struct {
		name   string
		args   []string
		getenv func(string) string
	}{
		{"flag", []string{"-token-hmac-secret=flag-secret", "-api-key=flag-api-key"}, env()},
		{"env", nil, env("WSGATE_TOKEN_HMAC_SECRET", "env-secret", "WSGATE_API_KEY", "env-api-key")},
		{"file", []string{"-config", path}, env("WSGATE_TOKEN_HMAC_SECRET", "env-secret")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := printConfig(mustParse(t, tt.args, tt.getenv), &out); err != nil {
				t.Fatal(err)
			}
			printed := out.String()
			for _, secret := range []string{"flag-secret", "flag-api-key", "env-secret", "env-api-key", "file-api-key"} {
				if strings.Contains(printed, secret) {
					t.Errorf("-print-config shows %q:\n%s", secret, printed)
				}
			}
			if n := strings.Count(printed, secretMask); n != 2 {
				t.Errorf("%d masked values, want 2 (the token secret and the API key):\n%s", n, printed)
			}
			if tt.name == "file" {
				if !strings.Contains(printed, "rsa_public_key: "+pubPath) || !strings.Contains(printed, "audience: aud-1") {
					t.Errorf("the public key's file and the audience are not printed:\n%s", printed)
				}
			}
		})
	}
	// PEM text in the file works as well as a path, and the path is
	// relative to the config file.
	dir := filepath.Dir(path)
	rel, err := filepath.Rel(dir, pubPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, value := range []string{rel, strings.ReplaceAll(strings.TrimSpace(string(pubPEM)), "\n", "\\n")} {
		p := filepath.Join(dir, "keys.yaml")
		os.WriteFile(p, []byte("client:\n  token:\n    rsa_public_key: \""+value+"\"\n"), 0o600)
		t.Chdir(t.TempDir())
		o := mustParse(t, []string{"-config", p}, env())
		if o.server.Tokens.RSAPublicKey == nil {
			t.Errorf("rsa_public_key %.30q: no key", value)
		}
	}
}

// writeKeys writes an RSA public key to a PEM file and returns its path and
// content.
func writeKeys(t *testing.T) (string, []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	p := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	path := filepath.Join(t.TempDir(), "rsa.pem")
	if err := os.WriteFile(path, p, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, p
}

func TestECDSAKeyFromFile(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ec.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
	path := filepath.Join(dir, "wsgate.yaml")
	os.WriteFile(path, []byte("client:\n  token:\n    ecdsa_public_key: ec.pem\n    issuer: iss-1\n"), 0o600)
	o := effective(t, mustParse(t, []string{"-config", path}, env()))
	if o.server.Tokens.ECDSAPublicKey == nil || !o.server.Tokens.ECDSAPublicKey.Equal(&key.PublicKey) || o.server.Tokens.Issuer != "iss-1" {
		t.Errorf("tokens %+v", o.server.Tokens)
	}
	if o.tokenECDSA != filepath.Join(dir, "ec.pem") {
		t.Errorf("printed ECDSA key %q, want the file's absolute path", o.tokenECDSA)
	}
}

// TestHelpNamesTheDemo: the help's demo command is the one the page and
// the README give.
func TestHelpNamesTheDemo(t *testing.T) {
	demo := strings.Join(strings.Fields(strings.ReplaceAll(description[strings.Index(description, "  wsgate "):], "\\", "")), " ")
	if demo != "wsgate "+server.DemoFlags {
		t.Errorf("help demo %q, want %q", demo, "wsgate "+server.DemoFlags)
	}
}
