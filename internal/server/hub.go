package server

import (
	"context"
	"fmt"
	"github.com/wsgate/wsgate"
	"log/slog"
	"net/http"

	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/centrifugo"
	"github.com/wsgate/wsgate/hub"
)

// The hub's endpoints.
const (
	hubPath = "/connection/websocket" // Centrifugo's client protocol
	apiPath = "/api/"                 // the server API: /api/publish, ...
)

// DemoFlags are the flags that make the page's pub/sub panel work without
// tokens, for a local demo; the page, the README and a startup hint name
// them.
const DemoFlags = "-allow-anonymous -allow-publish -presence -history-size 100 -history-ttl 5m"

// hubEndpoints is the running hub and the handlers that serve it.
type hubEndpoints struct {
	hub *hub.Hub
	ws  *centrifugo.Handler
	api *centrifugo.APIHandler
}

// hubConfig returns the hub's configuration.
func (s *Server) hubConfig() hub.Config {
	c := s.cfg
	hc := hub.Config{
		Broker:         s.countBroker(s.broker),
		Channels:       *c.Channels,
		AllowAnonymous: c.AllowAnonymous,
		// One keepalive setting for every client: on /ws it is a
		// WebSocket ping, here the protocol's own ping ({}), which
		// Centrifugo's SDKs expect.
		PingInterval: c.PingInterval,
		PongTimeout:  c.PingTimeout,
		Version:      c.Version,
		Logger:       s.log,
	}
	if s.metrics != nil {
		hc.OnFanout = s.metrics.Fanout
	}
	if hc.PingInterval < 0 {
		hc.PingInterval = -1
	}
	if s.tokens != nil {
		hc.Tokens = s.tokens
	}
	s.clusterHubConfig(&hc)
	return hc
}

// startHub starts the hub and its broker (ctx bounds the broker's start)
// and makes the hub's endpoints serve.
func (s *Server) startHub(ctx context.Context) error {
	if err := s.startEmbedded(ctx); err != nil {
		return err
	}
	h, err := hub.New(ctx, s.hubConfig())
	if err != nil {
		s.stopEmbedded()
		return fmt.Errorf("server: %w", err)
	}
	c := s.cfg
	s.hub.Store(&hubEndpoints{
		hub: h,
		ws: centrifugo.NewHandler(centrifugo.Config{
			Hub:                     h,
			MessageSizeLimit:        c.MaxMessageSize,
			OriginPatterns:          c.AllowOrigins,
			InsecureSkipOriginCheck: c.allowAllOrigins(),
			Compression:             c.Compression,
			Budget:                  s.budget,
			OnOpen:                  func(c *wsgate.Conn) { s.opened(c, true) },
			OnClose:                 s.onClose,
			Logger:                  s.log,
		}),
		api: centrifugo.NewAPIHandler(h, centrifugo.APIConfig{Key: c.APIKey, Logger: s.log}),
	})
	return nil
}

// stopHub shuts a hub down that Serve started but could not serve.
func (s *Server) stopHub() {
	hp := s.hub.Load()
	if hp == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := hp.hub.Shutdown(ctx); err != nil {
		s.log.Error("hub shutdown", "err", err)
	}
	s.stopEmbedded()
}

// handleHubWS serves /connection/websocket requests that reach net/http
// (see handleWS).
func (s *Server) handleHubWS(w http.ResponseWriter, r *http.Request) {
	s.serveUpgrade(w, r, s.upgradeHub)
}

// upgradeHub decides on an upgrade to /connection/websocket (a
// wsgate.UpgradeFunc): the hub must be serving, the Host allowed and a
// connection slot free.
func (s *Server) upgradeHub(r *http.Request) (*wsgate.Upgrader, any, error) {
	hp := s.hub.Load()
	if hp == nil {
		return nil, nil, &wsgate.HTTPError{Status: http.StatusServiceUnavailable, Message: "not serving yet", Header: http.Header{"Retry-After": {"1"}}}
	}
	if err := s.admit(r, true); err != nil {
		return nil, nil, err
	}
	up, session := hp.ws.Prepare(r)
	return up, session, nil
}

// handleAPI serves the server API.
func (s *Server) handleAPI(w http.ResponseWriter, r *http.Request) {
	hp := s.hub.Load()
	if hp == nil {
		w.Header().Set("Retry-After", "1")
		plain(w, http.StatusServiceUnavailable, "not serving yet")
		return
	}
	s.countAPI(w, r, hp.api)
}

// brokerHealthy asks the broker, when it can tell, whether it can publish
// and deliver, and logs when the answer changes.
func (s *Server) brokerHealthy() bool {
	hc, ok := s.broker.(broker.HealthChecker)
	if !ok {
		return true
	}
	err := hc.Healthy()
	up := err == nil
	if s.brokerUp.Swap(up) != up {
		if up {
			s.log.Info("broker healthy again")
		} else {
			s.log.Warn("broker unhealthy: /readyz answers 503", "err", err)
		}
	}
	return up
}

// logHub writes the hub's settings at startup, and hints about those that
// leave an endpoint refusing everyone. It names no secret, only whether
// one is set.
func (s *Server) logHub() {
	c := s.cfg
	var keys []string
	if c.Tokens.HMACSecret != "" {
		keys = append(keys, "hmac")
	}
	if c.Tokens.RSAPublicKey != nil {
		keys = append(keys, "rsa")
	}
	if c.Tokens.ECDSAPublicKey != nil {
		keys = append(keys, "ecdsa")
	}
	api := apiPath + " on the main address"
	if p := s.apiBound.Load(); p != nil {
		api = s.scheme() + "://" + *p + apiPath
	}
	namespaces := make([]string, 0, len(c.Channels.Namespaces))
	for _, ns := range c.Channels.Namespaces {
		namespaces = append(namespaces, ns.Name)
	}
	d := c.Channels.Default
	s.log.Info("hub",
		"endpoint", hubPath,
		"api", api,
		"api_key_set", c.APIKey != "",
		"allow_anonymous", c.AllowAnonymous,
		"token_keys", keys,
		"token_audience", c.Tokens.Audience,
		"token_issuer", c.Tokens.Issuer,
		slog.Group("without_namespace",
			"allow_subscribe", d.AllowSubscribeForClient,
			"history_size", d.HistorySize,
			"history_ttl", d.HistoryTTL,
			"presence", d.Presence,
			"join_leave", d.JoinLeave,
			"allow_publish", d.AllowPublishForSubscriber || d.AllowPublishForClient,
		),
		"namespaces", namespaces,
		"broker", fmt.Sprintf("%T", s.broker),
	)
	s.logBroker()
	if len(keys) == 0 && !c.AllowAnonymous {
		s.log.Info("hub: no client can connect to " + hubPath + ": no token key is set (-token-hmac-secret) and anonymous connections are off (-allow-anonymous); for a local demo run: wsgate " + DemoFlags)
	}
	if c.APIKey == "" {
		s.log.Info("http api: no key is set (-api-key), so every request gets 401")
	}
	if c.AllowAnonymous && d.AllowPublishForAnonymous && (d.AllowPublishForSubscriber || d.AllowPublishForClient) {
		s.log.Warn("anonymous clients may publish to channels without a namespace: anyone who reaches " + hubPath + " can send to every subscriber")
	}
}
