package centrifugo

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path"
	"strings"

	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/hub"
)

// APIConfig configures the server API. The zero value of every field means
// the documented default.
type APIConfig struct {
	// Key is the API key clients send in X-API-Key or in
	// "Authorization: apikey KEY". An empty key refuses every request
	// (401), as Centrifugo does, unless Insecure is set.
	Key string
	// Insecure serves requests without a key. For development only.
	Insecure bool
	// MaxBodyBytes bounds a request body; a larger one gets 413. Defaults
	// to 10 MiB.
	MaxBodyBytes int64
	// Logger receives the handler's logs. Defaults to slog.Default().
	Logger *slog.Logger
}

// DefaultAPIMaxBodyBytes is APIConfig.MaxBodyBytes' default.
const DefaultAPIMaxBodyBytes = 10 << 20

// APIHandler serves Centrifugo's server HTTP API on a hub: POST
// .../publish, broadcast, subscribe, unsubscribe, disconnect, presence,
// presence_stats, history, history_remove, channels and info, with JSON
// bodies; the method is the last element of the path, so the handler can
// be mounted at /api/ on the main address or on its own. Answers are
// Centrifugo's: HTTP 200 with {"result": ...} or {"error": {"code": ...,
// "message": ...}}; 401 without a valid key; 405 for methods other than
// POST; 404 for unknown API methods; 400 with a JSON error for a malformed
// body.
type APIHandler struct {
	hub *hub.Hub
	cfg APIConfig
	log *slog.Logger
}

// NewAPIHandler returns the server API for h.
func NewAPIHandler(h *hub.Hub, cfg APIConfig) *APIHandler {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultAPIMaxBodyBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &APIHandler{hub: h, cfg: cfg, log: cfg.Logger}
}

func (a *APIHandler) authorized(r *http.Request) bool {
	if a.cfg.Insecure {
		return true
	}
	if a.cfg.Key == "" {
		return false
	}
	key := r.Header.Get("X-API-Key")
	if key == "" {
		if f := strings.Fields(r.Header.Get("Authorization")); len(f) == 2 && strings.EqualFold(f[0], "apikey") {
			key = f[1]
		}
	}
	return key != "" && subtle.ConstantTimeCompare([]byte(key), []byte(a.cfg.Key)) == 1
}

type apiError struct {
	Code    uint32 `json:"code"`
	Message string `json:"message"`
}

func (a *APIHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !a.authorized(r) {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	method := path.Base(r.URL.Path)
	call, ok := apiMethods[method]
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": apiError{104, "not found"}})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]any{"error": apiError{107, "bad request: body too large"}})
			return
		}
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": apiError{107, "bad request: " + err.Error()}})
		return
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		body = []byte("{}")
	}
	res, err := call(r.Context(), a.hub, body)
	if err != nil {
		var bad *badRequest
		if errors.As(err, &bad) {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": apiError{107, "bad request: " + bad.msg}})
			return
		}
		e, d := hub.AsError(err)
		if d != nil {
			e = hub.ErrorBadRequest
		}
		if e.Code == hub.ErrorInternal.Code {
			a.log.Error("centrifugo: api", "method", method, "err", err)
		}
		writeJSON(w, http.StatusOK, map[string]any{"error": apiError{e.Code, e.Message}})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"result": res})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal server error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// badRequest is a body that cannot be decoded.
type badRequest struct{ msg string }

func (b *badRequest) Error() string { return b.msg }

func decode(body []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if err := dec.Decode(v); err != nil {
		return &badRequest{err.Error()}
	}
	if dec.More() {
		return &badRequest{"trailing data after the JSON object"}
	}
	return nil
}

type apiMethod func(ctx context.Context, h *hub.Hub, body []byte) (any, error)

var apiMethods = map[string]apiMethod{
	"publish":        apiPublish,
	"broadcast":      apiBroadcast,
	"subscribe":      apiSubscribe,
	"unsubscribe":    apiUnsubscribe,
	"disconnect":     apiDisconnect,
	"presence":       apiPresence,
	"presence_stats": apiPresenceStats,
	"history":        apiHistory,
	"history_remove": apiHistoryRemove,
	"channels":       apiChannels,
	"info":           apiInfo,
}

// publishBody is the body of publish and broadcast.
type publishBody struct {
	Channel        string            `json:"channel"`
	Channels       []string          `json:"channels"`
	Data           json.RawMessage   `json:"data"`
	B64Data        string            `json:"b64data"`
	SkipHistory    bool              `json:"skip_history"`
	Tags           map[string]string `json:"tags"`
	IdempotencyKey string            `json:"idempotency_key"`
}

func (p *publishBody) payload() ([]byte, error) {
	if p.B64Data != "" {
		b, err := base64.StdEncoding.DecodeString(p.B64Data)
		if err != nil {
			return nil, hub.ErrorBadRequest
		}
		return b, nil
	}
	return p.Data, nil
}

func (p *publishBody) options() hub.PublishOptions {
	return hub.PublishOptions{Tags: p.Tags, IdempotencyKey: p.IdempotencyKey, SkipHistory: p.SkipHistory}
}

type publishResult struct {
	Offset uint64 `json:"offset,omitempty"`
	Epoch  string `json:"epoch,omitempty"`
}

type publishResponse struct {
	Error  *apiError      `json:"error,omitempty"`
	Result *publishResult `json:"result,omitempty"`
}

func apiPublish(ctx context.Context, h *hub.Hub, body []byte) (any, error) {
	var p publishBody
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	if p.Channel == "" {
		return nil, hub.ErrorBadRequest
	}
	data, err := p.payload()
	if err != nil {
		return nil, err
	}
	sp, err := h.Publish(ctx, p.Channel, data, p.options())
	if err != nil {
		return nil, err
	}
	return publishResult{Offset: sp.Offset, Epoch: sp.Epoch}, nil
}

func apiBroadcast(ctx context.Context, h *hub.Hub, body []byte) (any, error) {
	var p publishBody
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	if len(p.Channels) == 0 {
		return nil, hub.ErrorBadRequest
	}
	data, err := p.payload()
	if err != nil {
		return nil, err
	}
	results, err := h.Broadcast(ctx, p.Channels, data, p.options())
	if err != nil {
		return nil, err
	}
	out := make([]publishResponse, len(results))
	for i, r := range results {
		if r.Err != nil {
			e, d := hub.AsError(r.Err)
			if d != nil {
				e = hub.ErrorBadRequest
			}
			out[i].Error = &apiError{e.Code, e.Message}
			continue
		}
		out[i].Result = &publishResult{Offset: r.Position.Offset, Epoch: r.Position.Epoch}
	}
	return map[string]any{"responses": out}, nil
}

type boolValue struct {
	Value bool `json:"value"`
}

type overrideBody struct {
	Presence           *boolValue `json:"presence"`
	JoinLeave          *boolValue `json:"join_leave"`
	ForceRecovery      *boolValue `json:"force_recovery"`
	ForcePositioning   *boolValue `json:"force_positioning"`
	ForcePushJoinLeave *boolValue `json:"force_push_join_leave"`
}

func (o *overrideBody) toHub() hub.Override {
	var out hub.Override
	if o == nil {
		return out
	}
	get := func(b *boolValue) *bool {
		if b == nil {
			return nil
		}
		v := b.Value
		return &v
	}
	out.Presence, out.JoinLeave, out.ForceRecovery = get(o.Presence), get(o.JoinLeave), get(o.ForceRecovery)
	out.ForcePositioning, out.ForcePushJoinLeave = get(o.ForcePositioning), get(o.ForcePushJoinLeave)
	return out
}

type streamPosition struct {
	Offset uint64 `json:"offset"`
	Epoch  string `json:"epoch"`
}

func apiSubscribe(ctx context.Context, h *hub.Hub, body []byte) (any, error) {
	var p struct {
		Channel      string          `json:"channel"`
		User         string          `json:"user"`
		Client       string          `json:"client"`
		ExpireAt     int64           `json:"expire_at"`
		Info         json.RawMessage `json:"info"`
		B64Info      string          `json:"b64info"`
		Data         json.RawMessage `json:"data"`
		B64Data      string          `json:"b64data"`
		RecoverSince *streamPosition `json:"recover_since"`
		Override     *overrideBody   `json:"override"`
	}
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	if p.Channel == "" {
		return nil, hub.ErrorBadRequest
	}
	opts := hub.ServerSubscribeOptions{Client: p.Client, Override: p.Override.toHub(), ExpireAt: p.ExpireAt, ChanInfo: p.Info, Data: p.Data}
	var err error
	if p.B64Info != "" {
		if opts.ChanInfo, err = base64.StdEncoding.DecodeString(p.B64Info); err != nil {
			return nil, hub.ErrorBadRequest
		}
	}
	if p.B64Data != "" {
		if opts.Data, err = base64.StdEncoding.DecodeString(p.B64Data); err != nil {
			return nil, hub.ErrorBadRequest
		}
	}
	if p.RecoverSince != nil {
		opts.RecoverSince = &broker.StreamPosition{Offset: p.RecoverSince.Offset, Epoch: p.RecoverSince.Epoch}
	}
	if err := h.SubscribeUser(ctx, p.User, p.Channel, opts); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func apiUnsubscribe(ctx context.Context, h *hub.Hub, body []byte) (any, error) {
	var p struct {
		Channel string `json:"channel"`
		User    string `json:"user"`
		Client  string `json:"client"`
	}
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	if err := h.UnsubscribeUser(ctx, p.User, p.Channel, p.Client); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func apiDisconnect(ctx context.Context, h *hub.Hub, body []byte) (any, error) {
	var p struct {
		User       string   `json:"user"`
		Client     string   `json:"client"`
		Whitelist  []string `json:"whitelist"`
		Disconnect *struct {
			Code   uint32 `json:"code"`
			Reason string `json:"reason"`
		} `json:"disconnect"`
	}
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	d := hub.DisconnectForceNoReconnect
	if p.Disconnect != nil {
		d = hub.Disconnect{Code: p.Disconnect.Code, Reason: p.Disconnect.Reason}
		if d.Code < 3000 || d.Code > 4999 || len(d.Reason) > 123 {
			return nil, hub.ErrorBadRequest
		}
	}
	if err := h.DisconnectUser(ctx, p.User, d, p.Client, p.Whitelist); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

type channelBody struct {
	Channel string `json:"channel"`
}

type clientInfoJSON struct {
	User     string          `json:"user"`
	Client   string          `json:"client"`
	ConnInfo json.RawMessage `json:"conn_info,omitempty"`
	ChanInfo json.RawMessage `json:"chan_info,omitempty"`
}

func infoJSON(i *broker.ClientInfo) *clientInfoJSON {
	if i == nil {
		return nil
	}
	return &clientInfoJSON{User: i.UserID, Client: i.ClientID, ConnInfo: rawJSON(i.ConnInfo), ChanInfo: rawJSON(i.ChanInfo)}
}

// rawJSON returns b as a JSON value, or nothing when b is empty or not
// JSON (binary info set through b64info).
func rawJSON(b []byte) json.RawMessage {
	if len(b) == 0 || !json.Valid(b) {
		return nil
	}
	return b
}

func apiPresence(ctx context.Context, h *hub.Hub, body []byte) (any, error) {
	var p channelBody
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	pr, err := h.Presence(ctx, p.Channel)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*clientInfoJSON, len(pr))
	for id, info := range pr {
		out[id] = infoJSON(info)
	}
	return map[string]any{"presence": out}, nil
}

func apiPresenceStats(ctx context.Context, h *hub.Hub, body []byte) (any, error) {
	var p channelBody
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	st, err := h.PresenceStats(ctx, p.Channel)
	if err != nil {
		return nil, err
	}
	return map[string]int{"num_clients": st.NumClients, "num_users": st.NumUsers}, nil
}

type publicationJSON struct {
	Data   json.RawMessage   `json:"data,omitempty"`
	Info   *clientInfoJSON   `json:"info,omitempty"`
	Offset uint64            `json:"offset,omitempty"`
	Tags   map[string]string `json:"tags,omitempty"`
}

func apiHistory(ctx context.Context, h *hub.Hub, body []byte) (any, error) {
	var p struct {
		Channel string          `json:"channel"`
		Limit   int             `json:"limit"`
		Since   *streamPosition `json:"since"`
		Reverse bool            `json:"reverse"`
	}
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	req := hub.HistoryRequest{Limit: p.Limit, Reverse: p.Reverse}
	if p.Since != nil {
		req.Since = &broker.StreamPosition{Offset: p.Since.Offset, Epoch: p.Since.Epoch}
	}
	hr, err := h.History(ctx, p.Channel, req)
	if err != nil {
		return nil, err
	}
	pubs := make([]publicationJSON, len(hr.Publications))
	for i, pub := range hr.Publications {
		pubs[i] = publicationJSON{Data: rawJSON(pub.Data), Info: infoJSON(pub.Info), Offset: pub.Offset, Tags: pub.Tags}
	}
	return map[string]any{"publications": pubs, "epoch": hr.Epoch, "offset": hr.Offset}, nil
}

func apiHistoryRemove(ctx context.Context, h *hub.Hub, body []byte) (any, error) {
	var p channelBody
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	if err := h.RemoveHistory(ctx, p.Channel); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func apiChannels(_ context.Context, h *hub.Hub, body []byte) (any, error) {
	var p struct {
		Pattern string `json:"pattern"`
	}
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	chans, err := h.Channels(p.Pattern)
	if err != nil {
		return nil, err
	}
	out := make(map[string]map[string]int, len(chans))
	for ch, n := range chans {
		out[ch] = map[string]int{"num_clients": n}
	}
	return map[string]any{"channels": out}, nil
}

func apiInfo(_ context.Context, h *hub.Hub, body []byte) (any, error) {
	if err := decode(body, &struct{}{}); err != nil {
		return nil, err
	}
	nodes := []map[string]any{}
	for _, i := range h.Nodes() {
		nodes = append(nodes, map[string]any{
			"uid":          i.ID,
			"name":         i.Name,
			"version":      i.Version,
			"num_clients":  i.NumClients,
			"num_users":    i.NumUsers,
			"num_channels": i.NumChannels,
			"num_subs":     i.NumSubs,
			"uptime":       i.UptimeSeconds,
		})
	}
	return map[string]any{"nodes": nodes}, nil
}
