package hub

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/wsgate/wsgate/broker"
)

// Config configures a Hub. The zero value of every field means the
// documented default; the hub never modifies it.
type Config struct {
	// Broker carries publications between nodes and keeps channel
	// streams. Defaults to a broker.Memory (single node).
	Broker broker.Broker
	// Presence keeps who is in which channel. Defaults to Broker when it
	// implements broker.PresenceManager, else to a broker.Memory.
	Presence broker.PresenceManager

	// Channels holds the channel options, by namespace.
	Channels ChannelConfig

	// Tokens verifies connection and subscription tokens (JWT in
	// Centrifugo; see package auth). Nil refuses every token with
	// DisconnectInvalidToken.
	Tokens TokenVerifier
	// AllowAnonymous lets clients connect without a token, with an empty
	// user ID (Centrifugo's allow_anonymous_connect_without_token).
	AllowAnonymous bool
	// Insecure lets every client connect, subscribe, publish and read
	// presence and history without any check (Centrifugo's client.insecure).
	// For development only.
	Insecure bool

	// Callbacks let the application authorize, reject and enrich.
	Callbacks Callbacks

	// OnFanout, when set, is called after each publication was handed to
	// this node's subscribers, with how many got it and the time since the
	// broker accepted the publication (from Publication.Time, so with
	// millisecond precision and, in a cluster, the publishing node's
	// clock). It runs on the delivering goroutine and must be quick:
	// servers feed a latency histogram with it.
	OnFanout func(deliveries int, sincePublish time.Duration)

	// ClientChannelLimit bounds the subscriptions of one connection.
	// Defaults to 128.
	ClientChannelLimit int
	// UserConnectionLimit bounds the connections of one user on this node;
	// zero means no limit.
	UserConnectionLimit int
	// PingInterval is how often the hub sends each client an
	// application-level ping (Centrifugo protocol); -1 disables pings.
	// Defaults to 25s.
	PingInterval time.Duration
	// PongTimeout is how long after a ping the client's pong may take
	// before the connection is closed with DisconnectNoPong; -1 means pongs
	// are not required. Defaults to 8s.
	PongTimeout time.Duration
	// StaleCloseDelay closes connections that did not connect (or whose
	// connect failed) within it, with DisconnectStale. Defaults to 15s.
	StaleCloseDelay time.Duration
	// ExpiredCloseDelay is the grace after a connection's or
	// subscription's expiry for the client to refresh it. Defaults to 25s.
	ExpiredCloseDelay time.Duration
	// PresenceUpdateInterval is how often presence entries are refreshed;
	// keep it well under the presence manager's TTL. Defaults to 25s.
	PresenceUpdateInterval time.Duration
	// PositionCheckInterval is how often positioned subscriptions are
	// compared with their channel's stream top; a subscriber behind a
	// position seen one interval earlier lost publications and gets the
	// insufficient state treatment. Defaults to 40s.
	PositionCheckInterval time.Duration
	// HistoryMaxPublicationLimit caps the publications of one client
	// history request; zero means no cap.
	HistoryMaxPublicationLimit int
	// RecoveryMaxPublicationLimit caps the publications recovered on one
	// subscribe; zero means no cap. Past it the subscription is not
	// recovered.
	RecoveryMaxPublicationLimit int
	// SyncBufferLimit bounds the publications kept for one subscription
	// while it subscribes (between reading the stream and going live); past
	// it the subscription gets the insufficient state treatment. Defaults to
	// 4096.
	SyncBufferLimit int

	// NodeAnnounceInterval is how often the node announces itself to the
	// others when the broker connects several (a broker.NodeDirectory);
	// an announcement stands for three intervals. Defaults to 3s, as
	// Centrifugo's node info messages.
	NodeAnnounceInterval time.Duration

	// Name and Version describe the node in Info. Name defaults to the
	// host name.
	Name    string
	Version string

	// Logger receives the hub's logs. Defaults to slog.Default().
	Logger *slog.Logger
}

// Defaults, documented on Config.
const (
	DefaultClientChannelLimit     = 128
	DefaultPingInterval           = 25 * time.Second
	DefaultPongTimeout            = 8 * time.Second
	DefaultStaleCloseDelay        = 15 * time.Second
	DefaultExpiredCloseDelay      = 25 * time.Second
	DefaultPresenceUpdateInterval = 25 * time.Second
	DefaultPositionCheckInterval  = 40 * time.Second
	DefaultNodeAnnounceInterval   = 3 * time.Second
	DefaultSyncBufferLimit        = 4096
	DefaultChannelMaxLength       = 255
)

// ChannelConfig holds the options of channels: Default for channels
// without a namespace, Namespaces for channels named "ns:rest".
type ChannelConfig struct {
	// Default applies to channels without a namespace.
	Default ChannelOptions
	// Namespaces lists the namespaces; a channel whose namespace is not
	// listed is unknown (ErrorUnknownChannel).
	Namespaces []Namespace
	// MaxLength bounds channel names, in bytes. Defaults to 255.
	MaxLength int
	// NamespaceBoundary separates a namespace from the rest of a channel
	// name. Defaults to ":".
	NamespaceBoundary string
	// PrivatePrefix marks channels that need a subscription token whatever
	// their namespace allows. Defaults to "$"; "-" disables it.
	PrivatePrefix string
	// UserBoundary and UserSeparator mark user-limited channels
	// ("chat#42,43": only users 42 and 43 may subscribe), for namespaces
	// with AllowUserLimitedChannels. Default "#" and ",".
	UserBoundary  string
	UserSeparator string
}

// Namespace is a named set of channel options.
type Namespace struct {
	Name string
	ChannelOptions
}

// ChannelOptions are the options of a namespace's channels. Names follow
// Centrifugo's configuration (in parentheses where they differ); every
// option is off by default.
type ChannelOptions struct {
	// Presence keeps the namespace's subscribers in the presence manager.
	Presence bool
	// JoinLeave publishes a join when a client subscribes and a leave when
	// it unsubscribes (join_leave).
	JoinLeave bool
	// ForcePushJoinLeave sends joins and leaves to every subscriber
	// (force_push_join_leave); otherwise only to those who asked.
	ForcePushJoinLeave bool
	// HistorySize and HistoryTTL keep the last publications of each
	// channel (history_size, history_ttl); both must be set for history.
	HistorySize int
	HistoryTTL  time.Duration
	// HistoryMetaTTL is how long a stream's position outlives its last
	// publication (history_meta_ttl). Zero means the broker's default.
	HistoryMetaTTL time.Duration
	// ForcePositioning and AllowPositioning make subscriptions track their
	// stream position (always, or when the client asks); a lost
	// publication is then detected. Need history.
	ForcePositioning bool
	AllowPositioning bool
	// ForceRecovery and AllowRecovery let resubscribing clients recover
	// what they missed (always, or when the client asks). Need history.
	ForceRecovery bool
	AllowRecovery bool
	// AllowSubscribeForClient lets connected clients subscribe without a
	// token (allow_subscribe_for_client); AllowSubscribeForAnonymous
	// extends it to anonymous ones.
	AllowSubscribeForClient    bool
	AllowSubscribeForAnonymous bool
	// SubscribeTokenRequired refuses subscriptions without a subscription
	// token, as the private prefix does.
	SubscribeTokenRequired bool
	// AllowPublishForClient lets clients publish; AllowPublishForSubscriber
	// lets subscribers of the channel publish; AllowPublishForAnonymous
	// extends either to anonymous clients.
	AllowPublishForClient     bool
	AllowPublishForSubscriber bool
	AllowPublishForAnonymous  bool
	// The same three for presence and history requests.
	AllowPresenceForClient     bool
	AllowPresenceForSubscriber bool
	AllowPresenceForAnonymous  bool
	AllowHistoryForClient      bool
	AllowHistoryForSubscriber  bool
	AllowHistoryForAnonymous   bool
	// AllowUserLimitedChannels enables user-limited channel names
	// (allow_user_limited_channels).
	AllowUserLimitedChannels bool
	// ChannelRegex, when set, is what the part after the namespace must
	// match (channel_regex); it also lifts the ASCII-only rule.
	ChannelRegex string

	regex *regexp.Regexp
}

func (o *ChannelOptions) history() bool { return o.HistorySize > 0 && o.HistoryTTL > 0 }

func (o *ChannelOptions) compile(name string) error {
	if o.HistorySize < 0 || o.HistoryTTL < 0 || o.HistoryMetaTTL < 0 {
		return fmt.Errorf("hub: namespace %q: negative history option", name)
	}
	if (o.HistorySize > 0) != (o.HistoryTTL > 0) {
		return fmt.Errorf("hub: namespace %q: history needs both HistorySize and HistoryTTL", name)
	}
	if !o.history() && (o.ForceRecovery || o.AllowRecovery || o.ForcePositioning || o.AllowPositioning) {
		return fmt.Errorf("hub: namespace %q: recovery and positioning need history", name)
	}
	if o.ChannelRegex != "" {
		re, err := regexp.Compile(o.ChannelRegex)
		if err != nil {
			return fmt.Errorf("hub: namespace %q: channel regex: %w", name, err)
		}
		o.regex = re
	}
	return nil
}

// Callbacks are the application's hooks. Each runs on the goroutine that
// handles the client's request, outside every hub lock, so it may block
// (for a database or an HTTP call) and may call the hub. A nil callback
// keeps the built-in behaviour. Returning an *Error rejects the request
// with that error reply; returning a Disconnect closes the connection;
// any other error becomes ErrorInternal.
type Callbacks struct {
	// OnConnecting runs for every connect request, after the token (if
	// any) was verified. It may authorize an anonymous or token-less
	// connection (by returning Credentials), reject it, or enrich it.
	OnConnecting func(ctx context.Context, e ConnectEvent) (ConnectReply, error)
	// OnSubscribe runs for every client subscribe request after the
	// built-in checks; e.Allowed says whether they allow it. A nil error
	// allows the subscription (so the callback can grant what the
	// namespace does not), with the reply's options when set.
	OnSubscribe func(ctx context.Context, c *Client, e SubscribeEvent) (SubscribeReply, error)
	// OnPublish runs for every client publish after the built-in checks;
	// e.Allowed says whether they allow it. A nil error publishes.
	OnPublish func(ctx context.Context, c *Client, e PublishEvent) (PublishReply, error)
	// OnRPC answers client RPC calls. Without it RPC gets
	// ErrorNotAvailable.
	OnRPC func(ctx context.Context, c *Client, e RPCEvent) (RPCReply, error)
	// OnRefresh runs when a client refreshes its connection, after the new
	// token was verified. It may change the expiry and info or reject.
	OnRefresh func(ctx context.Context, c *Client, e RefreshEvent) (RefreshReply, error)
	// OnMessage receives the client's asynchronous messages (send). Without
	// it a send closes the connection with DisconnectNotAvailable.
	OnMessage func(ctx context.Context, c *Client, data []byte)
	// OnDisconnect is told when a connected client has gone, once, after
	// its subscriptions ended.
	OnDisconnect func(c *Client, d Disconnect)
}

// Credentials identify a connection.
type Credentials struct {
	UserID   string
	ExpireAt int64  // Unix seconds; 0 means the connection never expires
	Info     []byte // connection info (JSON), shared with the channels
}

// ConnectEvent describes a connect request.
type ConnectEvent struct {
	ClientID string
	Token    string
	// Credentials are the verified token's, nil without a token.
	Credentials *Credentials
	Data        []byte
	Name        string
	Version     string
	Headers     map[string]string
	// Channels lists the server-side subscriptions the client asks to
	// restore.
	Channels []string
}

// ConnectReply is what OnConnecting decided.
type ConnectReply struct {
	// Credentials, when set, replace the token's (or authorize a
	// connection without one).
	Credentials *Credentials
	// Subscriptions are server-side subscriptions to add.
	Subscriptions map[string]SubscribeOptions
	// Data is returned to the client in the connect result.
	Data []byte
}

// SubscribeEvent describes a client subscribe request.
type SubscribeEvent struct {
	Channel string
	Token   string
	Data    []byte
	// Allowed is the built-in decision (namespace options and token).
	Allowed bool
	// Options are the subscription options the built-in checks chose.
	Options SubscribeOptions
}

// SubscribeReply is what OnSubscribe decided.
type SubscribeReply struct {
	// Options, when set, replace the proposed options.
	Options *SubscribeOptions
}

// SubscribeOptions are the options of one subscription.
type SubscribeOptions struct {
	ExpireAt      int64  // Unix seconds; 0 means never
	ChanInfo      []byte // channel info, part of the client's info in this channel
	Data          []byte // returned to the client with the subscription
	Presence      bool
	JoinLeave     bool // publish this client's join and leave
	PushJoinLeave bool // send joins and leaves to this client
	Recovery      bool
	Positioning   bool
}

// PublishEvent describes a client publish request.
type PublishEvent struct {
	Channel string
	Data    []byte
	Allowed bool
}

// PublishReply is what OnPublish decided.
type PublishReply struct {
	// Data, when set, replaces the published data.
	Data []byte
	// SkipHistory publishes without keeping the publication in history.
	SkipHistory bool
}

// RPCEvent describes a client RPC call.
type RPCEvent struct {
	Method string
	Data   []byte
}

// RPCReply is an RPC result.
type RPCReply struct {
	Data []byte
}

// RefreshEvent describes a client connection refresh.
type RefreshEvent struct {
	Token       string
	Credentials Credentials // from the verified token
}

// RefreshReply is what OnRefresh decided.
type RefreshReply struct {
	// ExpireAt and Info, when set, replace the token's.
	ExpireAt int64
	Info     []byte
	// Expired refuses the refresh: the connection is closed with
	// DisconnectExpired.
	Expired bool
}

// TokenVerifier verifies tokens. Its errors wrap ErrTokenExpired or
// ErrInvalidToken.
type TokenVerifier interface {
	VerifyConnectToken(token string) (ConnectToken, error)
	VerifySubscribeToken(token string) (SubscribeToken, error)
}

// ConnectToken is a verified connection token.
type ConnectToken struct {
	UserID   string
	ExpireAt int64 // Unix seconds; 0 for none
	Info     []byte
	// Channels are server-side subscriptions with the channel's options.
	Channels []string
	// Subs are server-side subscriptions with their own info and options.
	Subs map[string]TokenSubscription
}

// TokenSubscription is one entry of a connection token's subs claim.
type TokenSubscription struct {
	Info     []byte
	Data     []byte
	Override Override
}

// Override changes a channel option for one subscription; nil keeps it.
type Override struct {
	Presence           *bool
	JoinLeave          *bool
	ForcePushJoinLeave *bool
	ForceRecovery      *bool
	ForcePositioning   *bool
}

// SubscribeToken is a verified subscription token.
type SubscribeToken struct {
	UserID   string
	Channel  string
	Client   string // when set, only this connection may use the token
	ExpireAt int64
	Info     []byte
	Data     []byte
	Override Override
}
