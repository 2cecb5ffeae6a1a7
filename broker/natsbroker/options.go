package natsbroker

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Options configure a Broker. The zero value connects to nats://127.0.0.1:4222
// with the defaults documented on each field. New copies the Options; the
// caller's value is never modified.
//
// Every node of one cluster must use the same Prefix; the history and
// presence settings (Replicas, MemoryStorage, HistoryMetaTTL) should agree
// too, since the streams they configure are shared.
type Options struct {
	// URLs is a comma-separated list of NATS server URLs, such as
	// "nats://n1:4222,nats://n2:4222"; credentials in a URL
	// (nats://user:pass@host) are honoured. Defaults to
	// nats://127.0.0.1:4222. Ignored when InProcess is set.
	URLs string
	// InProcess, when set, connects to an in-process server (such as an
	// Embedded one) without a socket.
	InProcess nats.InProcessConnProvider
	// Name is the connection's name, shown by the server's monitoring.
	// Defaults to "wsgate".
	Name string

	// CredentialsFile is a NATS .creds file (user JWT and NKey seed).
	CredentialsFile string
	// Token authenticates with a token.
	Token string
	// User and Password authenticate with a user name and password.
	User, Password string

	// TLSConfig, when set, is used for the connection as is.
	TLSConfig *tls.Config
	// TLSCAFile is a PEM file of the CAs that sign the servers'
	// certificates; setting it turns TLS on. Ignored when TLSConfig is set.
	TLSCAFile string
	// TLSCertFile and TLSKeyFile are a client certificate and its key, for
	// servers that verify clients. Ignored when TLSConfig is set.
	TLSCertFile, TLSKeyFile string

	// Prefix starts every subject and stream name the broker uses, so that
	// several independent wsgate clusters can share one NATS system. A
	// single token of letters, digits, '-' and '_'. Defaults to "wsgate":
	// streams WSGATE_HISTORY and WSGATE_PRESENCE, subjects wsgate.>.
	Prefix string
	// Replicas is how many NATS servers keep a copy of the history and
	// presence streams: 1 for a single server, 3 for a cluster of three or
	// more (an acknowledged publication then survives the loss of one
	// server). Defaults to 1.
	Replicas int
	// MemoryStorage keeps history in memory instead of files: faster, but
	// a NATS server restart loses it (streams then start new epochs).
	// Presence is always kept in memory.
	MemoryStorage bool

	// PresenceTTL is how long a presence entry lives without a refresh by
	// AddPresence. Defaults to 60 seconds; the minimum is one second.
	PresenceTTL time.Duration
	// HistoryMetaTTL is how long a stream's epoch and offset outlive its
	// last publication when PublishOptions.HistoryMetaTTL is zero. Defaults
	// to 24 hours.
	HistoryMetaTTL time.Duration
	// IdempotencyWindow is how long idempotency keys are remembered at
	// least; a publish that asks for a longer IdempotentResultTTL widens it.
	// Defaults to 5 minutes.
	IdempotencyWindow time.Duration

	// RequestTimeout bounds each request to NATS (a publish, a read) when
	// the caller's context has no earlier deadline. Defaults to 5 seconds.
	RequestTimeout time.Duration
	// StartTimeout bounds how long Run waits for the first connection and
	// for JetStream (a fresh cluster elects its leaders first). Defaults to
	// 30 seconds.
	StartTimeout time.Duration
	// ReconnectWait is the pause between reconnection attempts to the same
	// server. Defaults to 1 second. The broker never stops reconnecting.
	ReconnectWait time.Duration
	// PositionCheckInterval is how long a channel with history may stay
	// quiet before the broker compares the last offset it delivered with
	// the stream's, so that a lost publication never goes unnoticed even
	// when nothing follows it. Defaults to 10 seconds; negative disables the
	// check (losses are then still found by the next publication, after a
	// reconnection and after a slow-consumer drop).
	PositionCheckInterval time.Duration
	// MaxRepair is the most publications the broker re-reads from history to
	// fill a gap in delivery; a larger gap is reported to the EventHandler
	// with HandleGap instead. Defaults to 1000.
	MaxRepair int
	// DeliveryShards is how many goroutines deliver to the EventHandler;
	// channels are spread over them by hash, and each channel is always
	// delivered by the same one. Defaults to 16.
	DeliveryShards int
	// ShardQueueSize is how many received messages wait per delivery shard.
	// When a shard's queue is full, further messages are dropped and the
	// loss is repaired from history or reported. Defaults to 4096.
	ShardQueueSize int

	// Logger receives the broker's warnings and errors. Defaults to
	// slog.Default().
	Logger *slog.Logger
}

// withDefaults returns a copy of o with zero fields set to their defaults,
// or an error naming the first invalid field.
func (o Options) withDefaults() (Options, error) {
	if o.URLs == "" {
		o.URLs = nats.DefaultURL
	}
	if o.Name == "" {
		o.Name = "wsgate"
	}
	if o.Prefix == "" {
		o.Prefix = "wsgate"
	}
	for _, c := range o.Prefix {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return o, fmt.Errorf("natsbroker: Options.Prefix %q: only letters, digits, '-' and '_' are allowed", o.Prefix)
		}
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Replicas < 1 || o.Replicas > 5 {
		return o, fmt.Errorf("natsbroker: Options.Replicas %d: must be between 1 and 5", o.Replicas)
	}
	if o.PresenceTTL == 0 {
		o.PresenceTTL = time.Minute
	}
	if o.PresenceTTL < time.Second {
		return o, fmt.Errorf("natsbroker: Options.PresenceTTL %v: at least one second", o.PresenceTTL)
	}
	if o.HistoryMetaTTL == 0 {
		o.HistoryMetaTTL = 24 * time.Hour
	}
	if o.IdempotencyWindow == 0 {
		o.IdempotencyWindow = 5 * time.Minute
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = 5 * time.Second
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 30 * time.Second
	}
	if o.ReconnectWait == 0 {
		o.ReconnectWait = time.Second
	}
	if o.PositionCheckInterval == 0 {
		o.PositionCheckInterval = 10 * time.Second
	}
	if o.MaxRepair == 0 {
		o.MaxRepair = 1000
	}
	if o.DeliveryShards == 0 {
		o.DeliveryShards = 16
	}
	if o.ShardQueueSize == 0 {
		o.ShardQueueSize = 4096
	}
	for name, v := range map[string]time.Duration{
		"HistoryMetaTTL": o.HistoryMetaTTL, "IdempotencyWindow": o.IdempotencyWindow,
		"RequestTimeout": o.RequestTimeout, "StartTimeout": o.StartTimeout, "ReconnectWait": o.ReconnectWait,
	} {
		if v < 0 {
			return o, fmt.Errorf("natsbroker: Options.%s %v: must not be negative", name, v)
		}
	}
	if o.MaxRepair < 0 || o.DeliveryShards < 0 || o.ShardQueueSize < 0 {
		return o, fmt.Errorf("natsbroker: Options.MaxRepair, DeliveryShards and ShardQueueSize must not be negative")
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		return o, fmt.Errorf("natsbroker: Options.TLSCertFile and TLSKeyFile go together")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

// natsOptions translates o into nats.go connection options.
func (o *Options) natsOptions() []nats.Option {
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(o.ReconnectWait),
		// Publishing while disconnected fails at once instead of queueing
		// behind the reconnection, so that Publish never reports success
		// for a publication that was not handed to NATS.
		nats.ReconnectBufSize(-1),
		nats.PingInterval(5 * time.Second),
		nats.Timeout(o.RequestTimeout),
	}
	if o.InProcess != nil {
		opts = append(opts, nats.InProcessServer(o.InProcess))
	}
	if o.CredentialsFile != "" {
		opts = append(opts, nats.UserCredentials(o.CredentialsFile))
	}
	if o.Token != "" {
		opts = append(opts, nats.Token(o.Token))
	}
	if o.User != "" || o.Password != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	switch {
	case o.TLSConfig != nil:
		opts = append(opts, nats.Secure(o.TLSConfig.Clone()))
	default:
		if o.TLSCAFile != "" {
			opts = append(opts, nats.RootCAs(o.TLSCAFile))
		}
		if o.TLSCertFile != "" {
			opts = append(opts, nats.ClientCert(o.TLSCertFile, o.TLSKeyFile))
		}
	}
	return opts
}

// urls returns the server list for nats.Connect.
func (o *Options) urls() string {
	parts := strings.Split(o.URLs, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return strings.Join(parts, ",")
}
