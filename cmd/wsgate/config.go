package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/wsgate/wsgate/hub"
	"github.com/wsgate/wsgate/internal/server"
	"gopkg.in/yaml.v3"
)

// fileConfig is the schema of the -config file and of -print-config's
// output. Its keys follow Centrifugo v6's configuration where Centrifugo
// has the same setting (http_server.address and port, http_api.key,
// client.*, channel.*, websocket.*, shutdown.timeout, log.level), so an
// operator coming from Centrifugo recognises them, and a Centrifugo
// channel configuration works unchanged. A nil field was not set.
//
// A field tagged secret:"true" (the API key, the token secret) is masked
// by -print-config; TestSecretsAreTagged makes sure every one is tagged.
// One tagged secret:"url" (NATS URLs) has the passwords in its URLs masked.
type fileConfig struct {
	HTTPServer httpServerSection `yaml:"http_server" json:"http_server"`
	HTTPAPI    httpAPISection    `yaml:"http_api" json:"http_api"`
	Client     clientSection     `yaml:"client" json:"client"`
	Channel    channelSection    `yaml:"channel" json:"channel"`
	Broker     brokerSection     `yaml:"broker" json:"broker"`
	WebSocket  websocketSection  `yaml:"websocket" json:"websocket"`
	Echo       echoSection       `yaml:"echo" json:"echo"`
	Shutdown   shutdownSection   `yaml:"shutdown" json:"shutdown"`
	Log        logSection        `yaml:"log" json:"log"`
	Prometheus enabledSection    `yaml:"prometheus" json:"prometheus"`
	Admin      adminSection      `yaml:"admin" json:"admin"`
	Debug      enabledSection    `yaml:"debug" json:"debug"`
}

// enabledSection is a section with only an on/off switch: prometheus
// (metrics, on by default) and debug (the profiler, off by default).
type enabledSection struct {
	Enabled *bool `yaml:"enabled" json:"enabled"`
}

// adminSection is the admin page: Centrifugo's admin.enabled and
// admin.password.
type adminSection struct {
	Enabled  *bool   `yaml:"enabled" json:"enabled"`
	Password *string `yaml:"password" json:"password" secret:"true"`
}

// tlsSection is Centrifugo's http_server.tls, with file paths only:
// cert_pem and key_pem name PEM files (relative to the config file), which
// the server reloads when they change.
type tlsSection struct {
	Enabled *bool   `yaml:"enabled" json:"enabled"`
	CertPEM *string `yaml:"cert_pem" json:"cert_pem"`
	KeyPEM  *string `yaml:"key_pem" json:"key_pem"`
}

type httpAPISection struct {
	Key *string `yaml:"key" json:"key" secret:"true"`
	// Address and Port are -api-addr: the API's own listener. Port 0
	// (unset) serves the API on the main address.
	Address *string `yaml:"address" json:"address"`
	Port    *int    `yaml:"port" json:"port"`
}

type httpServerSection struct {
	Address          *string   `yaml:"address" json:"address"`
	Port             *int      `yaml:"port" json:"port"`
	AllowedHosts     []string  `yaml:"allowed_hosts" json:"allowed_hosts"`
	HandshakeTimeout *duration `yaml:"handshake_timeout" json:"handshake_timeout"`
	ReadTimeout      *duration `yaml:"read_timeout" json:"read_timeout"`
	WriteTimeout     *duration `yaml:"write_timeout" json:"write_timeout"`
	IdleTimeout      *duration `yaml:"idle_timeout" json:"idle_timeout"`
	MaxHeaderBytes   *int      `yaml:"max_header_bytes" json:"max_header_bytes"`
	MaxConns         *int      `yaml:"max_conns" json:"max_conns"`
	// InternalAddress and InternalPort are -admin-addr, Centrifugo's
	// internal server. Port 0 (unset): no admin listener.
	InternalAddress *string    `yaml:"internal_address" json:"internal_address"`
	InternalPort    *int       `yaml:"internal_port" json:"internal_port"`
	TLS             tlsSection `yaml:"tls" json:"tls"`
}

type clientSection struct {
	AllowedOrigins  []string     `yaml:"allowed_origins" json:"allowed_origins"`
	ConnectionLimit *int         `yaml:"connection_limit" json:"connection_limit"`
	PingInterval    *duration    `yaml:"ping_interval" json:"ping_interval"`
	PongTimeout     *duration    `yaml:"pong_timeout" json:"pong_timeout"`
	Token           tokenSection `yaml:"token" json:"token"`
	AllowAnonymous  *bool        `yaml:"allow_anonymous_connect_without_token" json:"allow_anonymous_connect_without_token"`
}

// tokenSection holds the keys of connection and subscription tokens. The
// public keys are PEM text or the path of a PEM file (relative to the
// config file); they are not secrets.
type tokenSection struct {
	HMACSecretKey  *string `yaml:"hmac_secret_key" json:"hmac_secret_key" secret:"true"`
	RSAPublicKey   *string `yaml:"rsa_public_key" json:"rsa_public_key"`
	ECDSAPublicKey *string `yaml:"ecdsa_public_key" json:"ecdsa_public_key"`
	Audience       *string `yaml:"audience" json:"audience"`
	Issuer         *string `yaml:"issuer" json:"issuer"`
}

// channelSection is Centrifugo's channel section: the options of channels
// without a namespace, the namespaces, and the rules of channel names.
type channelSection struct {
	WithoutNamespace  channelOptions     `yaml:"without_namespace" json:"without_namespace"`
	Namespaces        []namespaceSection `yaml:"namespaces" json:"namespaces"`
	PrivatePrefix     *string            `yaml:"private_prefix" json:"private_prefix"`
	NamespaceBoundary *string            `yaml:"namespace_boundary" json:"namespace_boundary"`
	MaxLength         *int               `yaml:"max_length" json:"max_length"`
}

type namespaceSection struct {
	Name           *string `yaml:"name" json:"name"`
	channelOptions `yaml:",inline"`
}

// channelOptions are Centrifugo's channel options. Each field has the
// name of its hub.ChannelOptions field, which channelOptionsTo and
// channelOptionsFrom rely on (TestChannelOptionsSchema checks it).
type channelOptions struct {
	Presence                   *bool     `yaml:"presence" json:"presence"`
	JoinLeave                  *bool     `yaml:"join_leave" json:"join_leave"`
	ForcePushJoinLeave         *bool     `yaml:"force_push_join_leave" json:"force_push_join_leave"`
	HistorySize                *int      `yaml:"history_size" json:"history_size"`
	HistoryTTL                 *duration `yaml:"history_ttl" json:"history_ttl"`
	HistoryMetaTTL             *duration `yaml:"history_meta_ttl" json:"history_meta_ttl"`
	ForcePositioning           *bool     `yaml:"force_positioning" json:"force_positioning"`
	AllowPositioning           *bool     `yaml:"allow_positioning" json:"allow_positioning"`
	ForceRecovery              *bool     `yaml:"force_recovery" json:"force_recovery"`
	AllowRecovery              *bool     `yaml:"allow_recovery" json:"allow_recovery"`
	AllowSubscribeForClient    *bool     `yaml:"allow_subscribe_for_client" json:"allow_subscribe_for_client"`
	AllowSubscribeForAnonymous *bool     `yaml:"allow_subscribe_for_anonymous" json:"allow_subscribe_for_anonymous"`
	SubscribeTokenRequired     *bool     `yaml:"subscribe_token_required" json:"subscribe_token_required"`
	AllowPublishForClient      *bool     `yaml:"allow_publish_for_client" json:"allow_publish_for_client"`
	AllowPublishForSubscriber  *bool     `yaml:"allow_publish_for_subscriber" json:"allow_publish_for_subscriber"`
	AllowPublishForAnonymous   *bool     `yaml:"allow_publish_for_anonymous" json:"allow_publish_for_anonymous"`
	AllowPresenceForClient     *bool     `yaml:"allow_presence_for_client" json:"allow_presence_for_client"`
	AllowPresenceForSubscriber *bool     `yaml:"allow_presence_for_subscriber" json:"allow_presence_for_subscriber"`
	AllowPresenceForAnonymous  *bool     `yaml:"allow_presence_for_anonymous" json:"allow_presence_for_anonymous"`
	AllowHistoryForClient      *bool     `yaml:"allow_history_for_client" json:"allow_history_for_client"`
	AllowHistoryForSubscriber  *bool     `yaml:"allow_history_for_subscriber" json:"allow_history_for_subscriber"`
	AllowHistoryForAnonymous   *bool     `yaml:"allow_history_for_anonymous" json:"allow_history_for_anonymous"`
	AllowUserLimitedChannels   *bool     `yaml:"allow_user_limited_channels" json:"allow_user_limited_channels"`
	ChannelRegex               *string   `yaml:"channel_regex" json:"channel_regex"`
}

// channelOptionsTo returns base with every option set in o replaced.
func channelOptionsTo(base hub.ChannelOptions, o channelOptions) hub.ChannelOptions {
	dst := reflect.ValueOf(&base).Elem()
	src := reflect.ValueOf(o)
	for i := range src.NumField() {
		f := src.Field(i)
		if f.IsNil() {
			continue
		}
		d := dst.FieldByName(src.Type().Field(i).Name)
		if v, ok := f.Interface().(*duration); ok {
			d.SetInt(int64(*v))
			continue
		}
		d.Set(f.Elem().Convert(d.Type()))
	}
	return base
}

// channelOptionsFrom returns every option of o, set.
func channelOptionsFrom(o hub.ChannelOptions) channelOptions {
	var out channelOptions
	dst := reflect.ValueOf(&out).Elem()
	src := reflect.ValueOf(o)
	for i := range dst.NumField() {
		f := dst.Field(i)
		v := src.FieldByName(dst.Type().Field(i).Name)
		p := reflect.New(f.Type().Elem())
		p.Elem().Set(v.Convert(f.Type().Elem()))
		f.Set(p)
	}
	return out
}

type websocketSection struct {
	MessageSizeLimit *int64    `yaml:"message_size_limit" json:"message_size_limit"`
	MemoryBudget     *int64    `yaml:"memory_budget" json:"memory_budget"`
	Compression      *bool     `yaml:"compression" json:"compression"`
	EventLoops       *int      `yaml:"event_loops" json:"event_loops"`
	MemoryRelease    *duration `yaml:"memory_release" json:"memory_release"`
}

type echoSection struct {
	Heartbeat *duration `yaml:"heartbeat" json:"heartbeat"`
}

type shutdownSection struct {
	Timeout *duration `yaml:"timeout" json:"timeout"`
}

type logSection struct {
	Level  *string `yaml:"level" json:"level"`
	Format *string `yaml:"format" json:"format"`
}

// duration is a time.Duration written the Go way ("10s", "1m30s") in the
// file, and printed without zero units ("1m", not "1m0s").
type duration time.Duration

// parseDuration parses a duration, also accepting Centrifugo's "-1" for
// "disabled".
func parseDuration(s string) (duration, error) {
	s = strings.TrimSpace(s)
	if s == "-1" {
		return -1, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: want a number with a unit, such as 10s, 500ms or 1m", s)
	}
	return duration(d), nil
}

// String formats d like time.Duration.String without zero trailing units.
func (d duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("want a duration such as 10s")
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

func (d duration) MarshalYAML() (any, error)    { return d.String(), nil }
func (d duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// fileFormat returns "json" or "yaml" by the name of a config file.
func fileFormat(path string) (string, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		return "json", nil
	case ".yaml", ".yml":
		return "yaml", nil
	}
	return "", fmt.Errorf("config file %s: unknown format: name it .yaml, .yml or .json", path)
}

// loadFile reads a config file into fc, over what fc holds: only the keys
// present in the file are set. Unknown keys, duplicate keys and values of
// the wrong type are errors that name the key and its line.
func loadFile(path string, fc *fileConfig) error {
	format, err := fileFormat(path)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	if format == "json" {
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			return fmt.Errorf("config file %s: not valid JSON: %w", path, err)
		}
	}
	// JSON is YAML too: one decoder reads both, with line numbers.
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil // empty file: nothing set
	}
	if err := decodeNode(doc.Content[0], reflect.ValueOf(fc).Elem(), ""); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// decodeNode decodes n into v, which has the type of a fileConfig part,
// path being the dotted key of n.
func decodeNode(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Tag == "!!null" {
		v.SetZero() // "key:" with no value: not set
		return nil
	}
	fail := func(format string, args ...any) error {
		where := path
		if where == "" {
			where = "the top level"
		}
		return fmt.Errorf("line %d: %s: %s", n.Line, where, fmt.Sprintf(format, args...))
	}
	if u, ok := v.Addr().Interface().(yaml.Unmarshaler); ok {
		if err := u.UnmarshalYAML(n); err != nil {
			return fail("%v", err)
		}
		return nil
	}
	switch v.Kind() {
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		if err := decodeNode(n, p.Elem(), path); err != nil {
			return err
		}
		v.Set(p)
		return nil
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return fail("want a mapping of keys to values")
		}
		seen := make(map[string]bool)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			key := joinKey(path, k.Value)
			if seen[k.Value] {
				return fmt.Errorf("line %d: %s: set twice", k.Line, key)
			}
			seen[k.Value] = true
			f, ok := fieldByKey(v.Type(), k.Value)
			if !ok {
				return fmt.Errorf("line %d: unknown key %s", k.Line, key)
			}
			if err := decodeNode(val, v.FieldByIndex(f), key); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return fail("want a list")
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := decodeNode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return fail("want a single value")
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(n.Value)
	case reflect.Int, reflect.Int64:
		i, err := strconv.ParseInt(n.Value, 10, 64)
		if err != nil || v.OverflowInt(i) {
			return fail("invalid number %q: want a whole number", n.Value)
		}
		v.SetInt(i)
	case reflect.Bool:
		b, err := strconv.ParseBool(n.Value)
		if err != nil {
			return fail("invalid value %q: want true or false", n.Value)
		}
		v.SetBool(b)
	default:
		return fail("unsupported type %s", v.Type()) // a schema bug
	}
	return nil
}

// fieldByKey returns the index of t's field whose yaml key is key, looking
// into inline fields too.
func fieldByKey(t reflect.Type, key string) ([]int, bool) {
	for i := range t.NumField() {
		name, opts, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == "" && opts == "inline" {
			if sub, ok := fieldByKey(t.Field(i).Type, key); ok {
				return append([]int{i}, sub...), true
			}
			continue
		}
		if name == key {
			return []int{i}, true
		}
	}
	return nil, false
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// secretMask replaces a secret's value in -print-config's output.
const secretMask = "<redacted>"

// maskSecrets replaces, in the struct v points to and in its nested
// structs, every non-empty string field tagged secret:"true" with
// secretMask.
func maskSecrets(v reflect.Value) {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return
	}
	for i := range v.NumField() {
		f, sf := v.Field(i), v.Type().Field(i)
		if sf.Tag.Get("secret") == "url" && f.Kind() == reflect.Pointer && !f.IsNil() && f.Elem().Kind() == reflect.String {
			m := server.RedactURLs(f.Elem().String())
			f.Set(reflect.ValueOf(&m))
			continue
		}
		if sf.Tag.Get("secret") == "true" {
			switch {
			case f.Kind() == reflect.String && f.Len() > 0:
				f.SetString(secretMask)
			case f.Kind() == reflect.Pointer && !f.IsNil() && f.Elem().Kind() == reflect.String && f.Elem().Len() > 0:
				m := secretMask
				f.Set(reflect.ValueOf(&m))
			}
			continue
		}
		switch f.Kind() {
		case reflect.Struct, reflect.Pointer:
			maskSecrets(f)
		case reflect.Slice:
			for j := range f.Len() {
				maskSecrets(f.Index(j).Addr())
			}
		}
	}
}

// encodeConfig writes fc, secrets masked, in format ("yaml" or "json").
func encodeConfig(fc fileConfig, format string) ([]byte, error) {
	maskSecrets(reflect.ValueOf(&fc))
	var buf bytes.Buffer
	if format == "json" {
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		if err := enc.Encode(fc); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	buf.WriteString("# wsgate: the effective configuration (flags > WSGATE_* environment > config file > defaults)\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(fc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// splitAddr splits a listen address into host and a numeric port.
func splitAddr(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("want host:port, e.g. 127.0.0.1:5555 or :5555: %w", err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q: want a number from 0 to 65535", p)
	}
	return host, port, nil
}

// effectiveFileConfig returns the configuration o runs with, every default
// filled in, as a config file would hold it.
func effectiveFileConfig(o options) (fileConfig, error) {
	c, err := o.server.Effective()
	if err != nil {
		return fileConfig{}, err
	}
	host, port, err := splitAddr(c.Addr)
	if err != nil {
		return fileConfig{}, fmt.Errorf("address %q: %w", c.Addr, err)
	}
	// The Config's "negative disables" and "negative means no limit"
	// become the file's 0.
	zeroIfNegative := func(d time.Duration) *duration { v := duration(max(d, 0)); return &v }
	limit := func(n int) *int { v := max(n, 0); return &v }
	dur := func(d time.Duration) *duration { v := duration(d); return &v }
	level := strings.ToLower(o.logLevel.String())
	fc := fileConfig{
		HTTPServer: httpServerSection{
			Address:          &host,
			Port:             &port,
			AllowedHosts:     nonNil(c.AllowedHosts),
			HandshakeTimeout: dur(c.HandshakeTimeout),
			ReadTimeout:      dur(c.ReadTimeout),
			WriteTimeout:     dur(c.WriteTimeout),
			IdleTimeout:      dur(c.IdleTimeout),
			MaxHeaderBytes:   &c.MaxHeaderBytes,
			MaxConns:         limit(c.MaxHTTPConns),
		},
		Client: clientSection{
			AllowedOrigins:  nonNil(c.AllowOrigins),
			ConnectionLimit: limit(c.MaxConns),
			PingInterval:    zeroIfNegative(c.PingInterval),
			PongTimeout:     dur(c.PingTimeout),
		},
		WebSocket: websocketSection{
			MessageSizeLimit: &c.MaxMessageSize,
			MemoryBudget:     &c.MemoryBudget,
			Compression:      &c.Compression,
			EventLoops:       &c.EventLoops,
			MemoryRelease:    zeroIfNegative(c.MemoryRelease),
		},
		Echo:     echoSection{Heartbeat: zeroIfNegative(c.Heartbeat)},
		Shutdown: shutdownSection{Timeout: dur(c.ShutdownTimeout)},
		Log:      logSection{Level: &level, Format: &o.logFormat},
	}
	fc.Client.Token = tokenSection{
		HMACSecretKey:  &c.Tokens.HMACSecret,
		RSAPublicKey:   &o.tokenRSA,
		ECDSAPublicKey: &o.tokenECDSA,
		Audience:       &c.Tokens.Audience,
		Issuer:         &c.Tokens.Issuer,
	}
	fc.Client.AllowAnonymous = &c.AllowAnonymous
	apiHost, apiPort := "", 0
	if c.APIAddr != "" {
		if apiHost, apiPort, err = splitAddr(c.APIAddr); err != nil {
			return fileConfig{}, fmt.Errorf("API address %q: %w", c.APIAddr, err)
		}
	}
	fc.HTTPAPI = httpAPISection{Key: &c.APIKey, Address: &apiHost, Port: &apiPort}
	adminHost, adminPort := "", 0
	if c.AdminAddr != "" {
		if adminHost, adminPort, err = splitAddr(c.AdminAddr); err != nil {
			return fileConfig{}, fmt.Errorf("admin address %q: %w", c.AdminAddr, err)
		}
	}
	fc.HTTPServer.InternalAddress, fc.HTTPServer.InternalPort = &adminHost, &adminPort
	tlsOn := c.TLSCertFile != ""
	fc.HTTPServer.TLS = tlsSection{Enabled: &tlsOn, CertPEM: &c.TLSCertFile, KeyPEM: &c.TLSKeyFile}
	metricsOn := !c.DisableMetrics
	fc.Prometheus = enabledSection{Enabled: &metricsOn}
	fc.Admin = adminSection{Enabled: &c.Admin, Password: &c.AdminPassword}
	fc.Debug = enabledSection{Enabled: &c.Pprof}
	ch := c.Channels
	fc.Channel = channelSection{
		WithoutNamespace:  channelOptionsFrom(ch.Default),
		Namespaces:        []namespaceSection{},
		PrivatePrefix:     &ch.PrivatePrefix,
		NamespaceBoundary: &ch.NamespaceBoundary,
		MaxLength:         &ch.MaxLength,
	}
	for _, ns := range ch.Namespaces {
		fc.Channel.Namespaces = append(fc.Channel.Namespaces, namespaceSection{Name: &ns.Name, channelOptions: channelOptionsFrom(ns.ChannelOptions)})
	}
	fc.Broker = brokerFileConfig(c, o)
	return fc, nil
}

// nonNil returns s, or an empty list for nil, so that it prints as [].
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
