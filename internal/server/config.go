package server

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/wsgate/wsgate"
)

// Defaults for the zero values of Config.
const (
	DefaultAddr             = "0.0.0.0:5555"
	DefaultHeartbeat        = time.Second
	DefaultMaxConns         = 10000
	DefaultMaxMessageSize   = 16 << 20
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultShutdownTimeout  = 10 * time.Second
)

// HeartbeatMessage is the text message the server sends on every connection
// once per Config.Heartbeat.
const HeartbeatMessage = "heartbeat"

// Config configures a Server. The zero value of every field means the
// documented default, so Config{} is a working server on 0.0.0.0:5555.
type Config struct {
	// Addr is the TCP address Run listens on. Defaults to DefaultAddr
	// ("0.0.0.0:5555"). Serve ignores it and uses its listener.
	Addr string

	// Version is reported in the startup log line. Defaults to "dev".
	Version string

	// Heartbeat is how often the text message "heartbeat" is sent on every
	// WebSocket connection. Defaults to 1s; negative disables heartbeats.
	// It is an application message, as in the tutorial; dead peers are
	// detected by the protocol pings (PingInterval), not by it.
	Heartbeat time.Duration

	// AllowOrigins lists host patterns (path.Match syntax, for example
	// "*.example.com" or "localhost:*") whose pages may open a WebSocket
	// besides same-origin pages. The single pattern "*" allows every
	// origin, which is only safe when the endpoint trusts no cookie or
	// other ambient credential; the server logs a warning for it.
	AllowOrigins []string

	// MaxConns bounds the WebSocket connections open at once; beyond it
	// /ws answers 503 before upgrading. Defaults to 10000; negative means
	// no limit.
	MaxConns int

	// MaxMessageSize is the largest message, in bytes, a client may send.
	// A larger one closes its connection with 1009 (message too big).
	// Defaults to 16 MiB.
	MaxMessageSize int64

	// HandshakeTimeout bounds reading a request's headers, and so the
	// opening handshake. Defaults to 10s.
	HandshakeTimeout time.Duration

	// ShutdownTimeout bounds the graceful shutdown that Run and Serve
	// start when their context is cancelled. Defaults to 10s.
	ShutdownTimeout time.Duration

	// PingInterval and PingTimeout set the protocol keepalive of every
	// connection (see wsgate.Options). Zero means the wsgate defaults (20s
	// and 10s); a negative PingInterval disables keepalive.
	PingInterval time.Duration
	PingTimeout  time.Duration

	// Compression enables permessage-deflate on /ws for clients that offer
	// it.
	Compression bool
}

// withDefaults returns a copy of c with every zero value replaced by its
// default, or an error naming the first invalid field.
func (c Config) withDefaults() (Config, error) {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.PingInterval == 0 {
		c.PingInterval = wsgate.DefaultPingInterval
	}
	if c.PingTimeout == 0 {
		c.PingTimeout = wsgate.DefaultPingTimeout
	}
	var errs []error
	if c.MaxMessageSize < 0 {
		errs = append(errs, fmt.Errorf("max message size %d: must be positive", c.MaxMessageSize))
	}
	if c.HandshakeTimeout < 0 {
		errs = append(errs, fmt.Errorf("handshake timeout %v: must be positive", c.HandshakeTimeout))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("shutdown timeout %v: must be positive", c.ShutdownTimeout))
	}
	if c.PingTimeout < 0 {
		errs = append(errs, fmt.Errorf("ping timeout %v: must be positive", c.PingTimeout))
	}
	origins := make([]string, 0, len(c.AllowOrigins))
	for _, p := range c.AllowOrigins {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if _, err := path.Match(p, ""); err != nil {
			errs = append(errs, fmt.Errorf("allowed origin pattern %q: %w", p, err))
		}
		origins = append(origins, p)
	}
	c.AllowOrigins = origins
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("server: invalid config: %w", err)
	}
	return c, nil
}

// allowAllOrigins reports whether the origin allowlist is the wildcard.
func (c Config) allowAllOrigins() bool {
	for _, p := range c.AllowOrigins {
		if p == "*" {
			return true
		}
	}
	return false
}

// wsOptions returns the wsgate options shared by every connection.
func (c Config) wsOptions() wsgate.Options {
	o := wsgate.Options{
		OriginPatterns:          c.AllowOrigins,
		InsecureSkipOriginCheck: c.allowAllOrigins(),
		Compression:             c.Compression,
		ReadLimit:               c.MaxMessageSize,
		PingInterval:            c.PingInterval,
		PingTimeout:             c.PingTimeout,
		HandshakeTimeout:        c.HandshakeTimeout,
		// Room for an echo of the largest message while the previous one
		// (or a heartbeat) is still going out; a client that reads slower
		// than that is closed with 1008 (the default PolicyClose).
		SendQueueBytes: int(max(wsgate.DefaultQueueBytes, 2*c.MaxMessageSize)),
	}
	if o.PingInterval < 0 {
		o.PingInterval = -1
	}
	return o
}
