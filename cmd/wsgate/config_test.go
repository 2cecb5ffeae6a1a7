package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/hub"
	"gopkg.in/yaml.v3"
)

// writeFile writes content to a file called name in a fresh directory and
// returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// mustParse runs parseArgs and fails on any error or output.
func mustParse(t *testing.T, args []string, getenv func(string) string) options {
	t.Helper()
	var stdout, stderr bytes.Buffer
	o, err := parseArgs(args, getenv, &stdout, &stderr)
	if err != nil {
		t.Fatalf("parseArgs(%q): %v\nstderr: %s", args, err, stderr.String())
	}
	if stdout.Len()+stderr.Len() > 0 {
		t.Errorf("unexpected output: %q %q", stdout.String(), stderr.String())
	}
	return o
}

// parseErr runs parseArgs, which must fail, and returns its stderr.
func parseErr(t *testing.T, args []string, getenv func(string) string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	_, err := parseArgs(args, getenv, &stdout, &stderr)
	if err == nil || errors.Is(err, errHelp) {
		t.Fatalf("parseArgs(%q) = %v, want an error", args, err)
	}
	if stdout.Len() > 0 {
		t.Errorf("stdout %q, want nothing", stdout.String())
	}
	return stderr.String()
}

const fullYAML = `
http_server:
  address: 127.0.0.1
  port: 7000
  allowed_hosts: [ws.example.com, "*.example.org:8443"]
  handshake_timeout: 5s
  read_timeout: 20s
  write_timeout: 7s
  idle_timeout: 2m
  max_header_bytes: 16384
  max_conns: 300
client:
  allowed_origins: ["*.example.com"]
  connection_limit: 0
  ping_interval: -1
  pong_timeout: 3s
websocket:
  message_size_limit: 1024
  compression: true
echo:
  heartbeat: 0
shutdown:
  timeout: 30s
log:
  level: debug
  format: json
`

// fullConfig is what fullYAML sets, as an effective server config.
func fullConfig() options {
	o := options{server: defaultConfig(), logFormat: "json", logLevel: -4}
	c := &o.server
	c.Addr = "127.0.0.1:7000"
	c.AllowedHosts = []string{"ws.example.com", "*.example.org:8443"}
	c.HandshakeTimeout, c.ReadTimeout, c.WriteTimeout, c.IdleTimeout = 5*time.Second, 20*time.Second, 7*time.Second, 2*time.Minute
	c.MaxHeaderBytes, c.MaxHTTPConns = 16384, 300
	c.AllowOrigins = []string{"*.example.com"}
	c.MaxConns, c.PingInterval, c.PingTimeout = -1, -1, 3*time.Second
	c.MaxMessageSize, c.Compression = 1024, true
	c.Heartbeat, c.ShutdownTimeout = -1, 30*time.Second
	return o
}

func TestConfigFile(t *testing.T) {
	for _, tt := range []struct{ name, content string }{
		{"wsgate.yaml", fullYAML},
		{"wsgate.yml", fullYAML},
		{"wsgate.json", yamlToJSON(t, fullYAML)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.name, tt.content)
			want := fullConfig()
			want.configFile = path
			for _, args := range [][]string{{"-config", path}, nil} {
				got := effective(t, mustParse(t, args, env("WSGATE_CONFIG", path)))
				if !reflect.DeepEqual(got, want) {
					t.Errorf("args %q:\n got %+v\nwant %+v", args, got, want)
				}
			}
		})
	}
}

// yamlToJSON converts a YAML document to tab-indented JSON.
func yamlToJSON(t *testing.T, src string) string {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(src), &v); err != nil {
		t.Fatal(err)
	}
	out, err := json.MarshalIndent(v, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestConfigFilePartialAndEmpty(t *testing.T) {
	path := writeFile(t, "wsgate.yaml", "http_server:\n  port: 9000\nlog:\n  level:\n")
	got := effective(t, mustParse(t, []string{"-config", path}, env()))
	want := options{server: defaultConfig(), logFormat: "text", configFile: path}
	want.server.Addr = "0.0.0.0:9000"
	if !reflect.DeepEqual(got, want) {
		t.Errorf("port only:\n got %+v\nwant %+v", got, want)
	}
	for _, empty := range []string{"", "# nothing\n", "{}\n"} {
		path := writeFile(t, "empty.yaml", empty)
		got := effective(t, mustParse(t, []string{"-config", path}, env()))
		want := options{server: defaultConfig(), logFormat: "text", configFile: path}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("file %q:\n got %+v\nwant %+v", empty, got, want)
		}
	}
}

// TestPrecedence sets one setting in every layer and removes the top one
// at a time: flag > env > file > default.
func TestPrecedence(t *testing.T) {
	path := writeFile(t, "wsgate.yaml", "http_server:\n  read_timeout: 31s\n  address: \"\"\n")
	tests := []struct {
		name   string
		args   []string
		getenv func(string) string
		want   time.Duration
	}{
		{"flag wins", []string{"-config", path, "-read-timeout=33s"}, env("WSGATE_READ_TIMEOUT", "32s"), 33 * time.Second},
		{"env over file", []string{"-config", path}, env("WSGATE_READ_TIMEOUT", "32s"), 32 * time.Second},
		{"file over default", []string{"-config", path}, env(), 31 * time.Second},
		{"default", nil, env(), 15 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := effective(t, mustParse(t, tt.args, tt.getenv))
			if got.server.ReadTimeout != tt.want {
				t.Errorf("read timeout %v, want %v", got.server.ReadTimeout, tt.want)
			}
		})
	}
	// The file's empty address with the default port; -addr replaces both.
	if got := mustParse(t, []string{"-config", path}, env()); got.server.Addr != ":5555" {
		t.Errorf("address \"\" in the file: Addr %q, want :5555", got.server.Addr)
	}
	if got := mustParse(t, []string{"-config", path}, env("WSGATE_ADDR", "127.0.0.1:1")); got.server.Addr != "127.0.0.1:1" {
		t.Errorf("WSGATE_ADDR over the file: Addr %q", got.server.Addr)
	}
	// A list from the environment replaces the file's list.
	path = writeFile(t, "wsgate.yaml", "http_server:\n  allowed_hosts: [a.example, b.example]\n")
	got := effective(t, mustParse(t, []string{"-config", path}, env("WSGATE_ALLOWED_HOSTS", "c.example")))
	if !reflect.DeepEqual(got.server.AllowedHosts, []string{"c.example"}) {
		t.Errorf("allowed hosts %q, want the environment's", got.server.AllowedHosts)
	}
}

func TestConfigFileErrors(t *testing.T) {
	tests := []struct {
		name, file, content string
		args                []string
		want                []string // in stderr
	}{
		{"unknown key", "w.yaml", "http_server:\n  port: 1\n  read_timout: 5s\n", nil,
			[]string{"line 3: unknown key http_server.read_timout"}},
		{"unknown nested key", "w.yaml", "client:\n  token:\n    hmac_secret: x\n", nil,
			[]string{"line 3: unknown key client.token.hmac_secret"}},
		{"unknown section", "w.yaml", "clients:\n  token: x\n", nil,
			[]string{"line 1: unknown key clients"}},
		{"unknown key in JSON", "w.json", `{"http_server": {}, "http_api": {"keyy": "k"}}`, nil,
			[]string{"unknown key http_api.keyy"}},
		{"unknown namespace option", "w.yaml", "channel:\n  namespaces:\n    - name: chat\n      presense: true\n", nil,
			[]string{"line 4: unknown key channel.namespaces[0].presense"}},
		{"namespaces wants a list", "w.yaml", "channel:\n  namespaces:\n    name: chat\n", nil,
			[]string{"line 3: channel.namespaces: want a list"}},
		{"namespace without a name", "w.yaml", "channel:\n  namespaces:\n    - presence: true\n", nil,
			[]string{"invalid channel.namespaces[0]", "a namespace needs a name"}},
		{"bad namespace name", "w.yaml", "channel:\n  namespaces:\n    - name: a\n    - name: ok\n    - name: ok\n", nil,
			[]string{"invalid channel.namespaces[0].name \"a\" (in ", "invalid channel.namespaces[2].name \"ok\" (in ", "defined twice"}},
		{"namespace history needs a TTL", "w.yaml", "channel:\n  namespaces:\n    - name: chat\n      history_size: 10\n      force_recovery: true\n", nil,
			[]string{"invalid channel.namespaces[0].history_ttl 0s (in ", "history needs both a size and a TTL",
				"invalid channel.namespaces[0].force_recovery true (in ", "needs history"}},
		{"bad channel regex", "w.yaml", "channel:\n  without_namespace:\n    channel_regex: \"[\"\n", nil,
			[]string{"invalid channel.without_namespace.channel_regex \"[\" (in ", "not a valid regular expression"}},
		{"flag history without its TTL names the flag", "w.yaml", "{}\n", []string{"-history-size=10"},
			[]string{"invalid -history-ttl 0s: history needs both a size and a TTL: the size is 10"}},
		{"negative history size", "w.yaml", "channel:\n  without_namespace:\n    history_size: -1\n", nil,
			[]string{"invalid channel.without_namespace.history_size -1 (in ", "must not be negative"}},
		{"bad RSA key", "w.yaml", "client:\n  token:\n    rsa_public_key: \"-----BEGIN PUBLIC KEY-----\\nnope\\n-----END PUBLIC KEY-----\"\n", nil,
			[]string{"invalid client.token.rsa_public_key \"-----BEGIN PUBLIC KEY-----", "...\" (in ", "RSA public key"}},
		{"missing ECDSA key file", "w.yaml", "client:\n  token:\n    ecdsa_public_key: no-such-file.pem\n", nil,
			[]string{"invalid client.token.ecdsa_public_key \"no-such-file.pem\" (in ", "neither PEM text nor a readable PEM file"}},
		{"API address without a port", "w.yaml", "http_api:\n  address: 10.0.0.1\n", nil,
			[]string{"invalid http_api.address 10.0.0.1:0 (in ", "needs a port"}},
		{"API address with port 0", "w.yaml", "{}\n", []string{"-api-addr=127.0.0.1:0"},
			[]string{"invalid -api-addr 127.0.0.1:0: an API address needs a port"}},
		{"API port out of range", "w.yaml", "http_api:\n  port: 70000\n", nil,
			[]string{"invalid http_api.port 70000 (in "}},
		{"API on the main address", "w.yaml", "http_server:\n  address: 127.0.0.1\n  port: 7000\n", []string{"-api-addr=127.0.0.1:7000"},
			[]string{"invalid -api-addr 127.0.0.1:7000: is the main address"}},
		{"duplicate key", "w.yaml", "log:\n  level: info\n  level: debug\n", nil,
			[]string{"line 3: log.level: set twice"}},
		{"bad duration", "w.yaml", "http_server:\n  read_timeout: fast\n", nil,
			[]string{"line 2: http_server.read_timeout: invalid duration \"fast\""}},
		{"bad number", "w.yaml", "client:\n  connection_limit: lots\n", nil,
			[]string{"line 2: client.connection_limit: invalid number \"lots\""}},
		{"bad bool", "w.yaml", "websocket:\n  compression: maybe\n", nil,
			[]string{"websocket.compression: invalid value \"maybe\""}},
		{"list wanted", "w.yaml", "http_server:\n  allowed_hosts: a.example\n", nil,
			[]string{"http_server.allowed_hosts: want a list"}},
		{"section wanted", "w.yaml", "log: info\n", nil, []string{"line 1: log: want a mapping"}},
		{"not YAML", "w.yaml", "http_server: [\n", nil, []string{"w.yaml"}},
		{"not JSON", "w.json", "http_server:\n  port: 1\n", nil, []string{"not valid JSON"}},
		{"invalid value names the key and file", "w.yaml", "http_server:\n  read_timeout: 0s\n", nil,
			[]string{"invalid http_server.read_timeout 0s (in ", "w.yaml): must be positive"}},
		{"value checked by the server names the key", "w.yaml", "http_server:\n  allowed_hosts: [\"::1\"]\n", nil,
			[]string{"invalid http_server.allowed_hosts ::1 (in ", "IPv6 address must be in brackets"}},
		{"port out of range", "w.yaml", "http_server:\n  port: 70000\n", nil,
			[]string{"invalid http_server.port 70000 (in "}},
		{"every invalid value at once", "w.yaml", "log:\n  level: loud\n  format: xml\nclient:\n  connection_limit: -5\n" +
			"  allowed_origins: [\"https://a.example\"]\nhttp_server:\n  read_timeout: 1s\n", nil,
			[]string{"invalid log.level \"loud\" (in", "invalid log.format \"xml\" (in", "invalid client.connection_limit -5 (in",
				"invalid client.allowed_origins https://a.example (in", "invalid http_server.read_timeout 1s (in"}},
		{"a flag's error names the flag, not the file", "w.yaml", "http_server:\n  handshake_timeout: 20s\n", []string{"-read-timeout=16s"},
			[]string{"invalid -read-timeout 16s: must not be shorter than the handshake timeout (20s)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.file, tt.content)
			stderr := parseErr(t, append([]string{"-config", path}, tt.args...), env())
			for _, want := range tt.want {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr %q does not mention %q", stderr, want)
				}
			}
		})
	}
}

func TestExampleConfigFile(t *testing.T) {
	const example = "../../docs/wsgate.example.yaml"
	o := mustParse(t, []string{"-config", example}, env())
	got := effective(t, o)
	if want := []string{"ws.example.com", "localhost"}; !reflect.DeepEqual(got.server.AllowedHosts, want) {
		t.Errorf("example allowed hosts %q, want %q", got.server.AllowedHosts, want)
	}
	wantNS := []hub.Namespace{{Name: "chat", ChannelOptions: hub.ChannelOptions{
		AllowSubscribeForClient: true, AllowPublishForSubscriber: true,
		Presence: true, AllowPresenceForSubscriber: true, JoinLeave: true,
		HistorySize: 100, HistoryTTL: 5 * time.Minute, ForceRecovery: true, AllowHistoryForSubscriber: true,
	}}}
	if !reflect.DeepEqual(got.server.Channels.Namespaces, wantNS) {
		t.Errorf("example namespaces\n %+v\nwant %+v", got.server.Channels.Namespaces, wantNS)
	}
	// Apart from its host list and its namespace the example shows the
	// defaults.
	got.server.AllowedHosts = defaultConfig().AllowedHosts
	got.server.Channels.Namespaces = []hub.Namespace{}
	want := options{server: defaultConfig(), logFormat: "text", configFile: example}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("example:\n got %+v\nwant %+v", got, want)
	}
	// It is complete: every key of the schema appears in it.
	data, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	for _, key := range schemaKeys(reflect.TypeFor[fileConfig](), "") {
		if _, ok := lookup(doc, key); !ok {
			t.Errorf("the example lacks %s", key)
		}
	}
}

// schemaKeys lists the dotted keys of a fileConfig type's leaves; a list
// of sections (channel.namespaces) is a leaf.
func schemaKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		key := joinKey(prefix, name)
		if f.Type.Kind() == reflect.Struct {
			keys = append(keys, schemaKeys(f.Type, key)...)
			continue
		}
		keys = append(keys, key)
	}
	return keys
}

// lookup returns the value at a dotted key in a decoded YAML document.
func lookup(doc map[string]any, key string) (any, bool) {
	var v any = doc
	for _, part := range strings.Split(key, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[part]; !ok {
			return nil, false
		}
	}
	return v, true
}

func TestEveryKeyIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/server.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range schemaKeys(reflect.TypeFor[fileConfig](), "") {
		if !bytes.Contains(doc, []byte("`"+key+"`")) {
			t.Errorf("docs/server.md does not name the key %s", key)
		}
	}
	// A namespace's keys: its name, and the channel options.
	for _, key := range schemaKeys(reflect.TypeFor[namespaceSection](), "") {
		if !bytes.Contains(doc, []byte("`"+key+"`")) {
			t.Errorf("docs/server.md does not name the namespace key %s", key)
		}
	}
	// And each setting's key is one of the schema's.
	keys := strings.Join(schemaKeys(reflect.TypeFor[fileConfig](), ""), " ")
	for _, s := range settings {
		for _, k := range strings.Split(s.key, ", ") {
			if k != "" && !strings.Contains(" "+keys+" ", " "+k+" ") {
				t.Errorf("-%s names key %q, which the schema lacks", s.flag, k)
			}
		}
	}
}

func TestEveryFlagIsInTheREADME(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	parseArgs([]string{"-help"}, env(), &stdout, io.Discard)
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z-]+)`).FindAllStringSubmatch(stdout.String(), -1) {
		if !bytes.Contains(readme, []byte("`-"+m[1]+"`")) {
			t.Errorf("README.md does not list -%s", m[1])
		}
	}
}

func TestPrintConfig(t *testing.T) {
	yamlPath := writeFile(t, "wsgate.yaml", fullYAML)
	jsonPath := writeFile(t, "wsgate.json", yamlToJSON(t, fullYAML))
	tests := []struct {
		name   string
		args   []string
		getenv func(string) string
		json   bool
		want   options
	}{
		{"defaults", nil, env(), false, options{server: defaultConfig(), logFormat: "text"}},
		{"yaml file", []string{"-config", yamlPath}, env(), false, fullConfig()},
		{"json file", []string{"-config", jsonPath}, env(), true, fullConfig()},
		{"every layer", []string{"-config", yamlPath, "-addr=127.0.0.1:9000"}, env("WSGATE_MAX_CONNS", "500"), false, func() options {
			o := fullConfig()
			o.server.Addr, o.server.MaxConns = "127.0.0.1:9000", 500
			return o
		}()},
		{"loopback resolves the host default", []string{"-addr=[::1]:1"}, env(), false, func() options {
			o := options{server: defaultConfig(), logFormat: "text"}
			o.server.Addr, o.server.AllowedHosts = "[::1]:1", []string{"localhost", "127.0.0.1", "[::1]"}
			return o
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := mustParse(t, append(tt.args, "-print-config"), tt.getenv)
			var out bytes.Buffer
			if err := printConfig(o, &out); err != nil {
				t.Fatal(err)
			}
			printed := out.String()
			if isJSON := json.Valid(out.Bytes()); isJSON != tt.json {
				t.Fatalf("output is JSON: %v, want %v:\n%s", isJSON, tt.json, printed)
			}
			// The output is a config file that gives the same configuration.
			name := "printed.yaml"
			if tt.json {
				name = "printed.json"
			}
			path := writeFile(t, name, printed)
			got := effective(t, mustParse(t, []string{"-config", path}, env()))
			want := tt.want
			want.configFile = path
			if !reflect.DeepEqual(got, want) {
				t.Errorf("printed config reads back as\n %+v\nwant %+v\nprinted:\n%s", got, want, printed)
			}
		})
	}
}

func TestPrintConfigShowsEveryKey(t *testing.T) {
	var out bytes.Buffer
	if err := printConfig(mustParse(t, []string{"-print-config"}, env()), &out); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	for _, key := range schemaKeys(reflect.TypeFor[fileConfig](), "") {
		if v, ok := lookup(doc, key); !ok || v == nil {
			t.Errorf("-print-config lacks %s:\n%s", key, out.String())
		}
	}
}

// withSecrets is a schema with secrets, like the hub's coming settings.
type withSecrets struct {
	API struct {
		Key  string  `yaml:"key" json:"key" secret:"true"`
		Name *string `yaml:"name" json:"name"`
	} `yaml:"http_api" json:"http_api"`
	Tokens []struct {
		Secret *string `yaml:"hmac_secret_key" secret:"true"`
	} `yaml:"tokens"`
	Empty string `yaml:"empty" secret:"true"`
}

func TestMaskSecrets(t *testing.T) {
	var v withSecrets
	name, s1, s2 := "public", "s3cret-1", "s3cret-2"
	v.API.Key, v.API.Name = "s3cret-0", &name
	v.Tokens = append(v.Tokens, struct {
		Secret *string `yaml:"hmac_secret_key" secret:"true"`
	}{&s1}, struct {
		Secret *string `yaml:"hmac_secret_key" secret:"true"`
	}{&s2})
	maskSecrets(reflect.ValueOf(&v))
	out, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out, []byte("s3cret")) {
		t.Errorf("a secret is printed:\n%s", out)
	}
	if strings.Count(string(out), secretMask) != 3 || !bytes.Contains(out, []byte("name: public")) || v.Empty != "" {
		t.Errorf("masked output:\n%s", out)
	}
	if s1 != "s3cret-1" {
		t.Error("masking changed the original value behind a pointer")
	}
}

// TestSecretsAreTagged makes sure a key, secret, password or token setting
// added to the schema carries secret:"true", so -print-config masks it. A
// public key is not a secret, nor is a setting that is not a string (such
// as subscribe_token_required).
func TestSecretsAreTagged(t *testing.T) {
	secretName := regexp.MustCompile(`(^|_)(key|secret|password|token)($|_)`)
	// Public keys are not secrets; nor is http_server.tls.key_pem, the
	// path of the key file (PEM text is refused there).
	public := regexp.MustCompile(`(^|_)public_key$|^key_pem$`)
	var walk func(t reflect.Type, path string)
	checked := 0
	walk = func(typ reflect.Type, path string) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			key := joinKey(path, name)
			ft := f.Type
			for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[duration]() {
				walk(ft, key)
				continue
			}
			checked++
			if ft.Kind() != reflect.String || public.MatchString(name) {
				continue
			}
			if secretName.MatchString(name) && f.Tag.Get("secret") != "true" {
				t.Errorf("%s looks like a secret but is not tagged secret:\"true\"", key)
			}
		}
	}
	walk(reflect.TypeFor[fileConfig](), "")
	if checked == 0 {
		t.Fatal("no field checked")
	}
	// The pattern catches the hub's coming secrets and nothing of today's.
	for name, want := range map[string]bool{"key": true, "hmac_secret_key": true, "api_key": true, "password": true,
		"token": false /* a section: its fields are checked */, "max_conns": false, "keepalive": false} {
		if name == "token" {
			continue
		}
		if got := secretName.MatchString(name); got != want {
			t.Errorf("secret pattern on %q = %v, want %v", name, got, want)
		}
	}
}

func TestPrintConfigProcess(t *testing.T) {
	path := writeFile(t, "wsgate.json", `{"http_server": {"port": 7001}}`)
	cmd := exec.Command(os.Args[0], "-print-config", "-config", path)
	cmd.Env = append(os.Environ(), runMainEnv+"=1", "WSGATE_HEARTBEAT=0")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("wsgate -print-config: %v\n%s", err, stderr.String())
	}
	var got struct {
		HTTPServer struct{ Port int } `json:"http_server"`
		Echo       struct{ Heartbeat string }
	}
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, stdout.String())
	}
	if got.HTTPServer.Port != 7001 || got.Echo.Heartbeat != "0s" {
		t.Errorf("printed port %d heartbeat %q, want 7001 and 0s:\n%s", got.HTTPServer.Port, got.Echo.Heartbeat, stdout.String())
	}
	if stderr.Len() > 0 {
		t.Errorf("stderr %q, want nothing", stderr.String())
	}

	// An invalid setting fails like the server would: status 2, named.
	cmd = exec.Command(os.Args[0], "-print-config", "-read-timeout=1s")
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "-read-timeout") {
		t.Errorf("-print-config with an invalid setting: %v\n%s", err, out)
	}
}
