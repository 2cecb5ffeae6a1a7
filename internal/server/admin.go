package server

import (
	"cmp"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wsgate/wsgate/internal/metrics"
	"github.com/wsgate/wsgate/web"
)

// The admin dashboard: /admin on the admin address, behind a password. The
// page (web/admin) polls /admin/api/stats, which answers the live figures
// and the series of the last minutes, sampled by one goroutine the Server
// owns.

const (
	// DefaultAdminSampleInterval is how often the admin page's series take
	// a sample.
	DefaultAdminSampleInterval = 2 * time.Second
	// adminSamples is the length of the series: 10 minutes at 2 s.
	adminSamples = 300
	// adminTopChannels is how many channels the page lists.
	adminTopChannels = 10
	// MinAdminPasswordLen is the shortest admin password a Config accepts.
	MinAdminPasswordLen = 8
)

// adminSample is one point of the admin page's charts.
type adminSample struct {
	at            time.Time
	conns         int
	msgsIn        uint64
	msgsOut       uint64
	subscriptions int
}

// admin is the admin page's state.
type admin struct {
	passwordHash [sha256.Size]byte
	every        time.Duration

	mu      sync.Mutex
	samples []adminSample // a ring of at most adminSamples, oldest at head
	head    int
}

func newAdmin(password string) *admin {
	return &admin{passwordHash: sha256.Sum256([]byte(password)), every: DefaultAdminSampleInterval}
}

// authorized reports whether r carries the admin password, as HTTP Basic
// authentication (any user name) or as "Authorization: Bearer PASSWORD".
// The comparison takes the same time whatever the guess.
func (a *admin) authorized(r *http.Request) bool {
	given, ok := "", false
	if _, p, basic := r.BasicAuth(); basic {
		given, ok = p, true
	} else if tok, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); found {
		given, ok = strings.TrimSpace(tok), true
	}
	if !ok {
		return false
	}
	h := sha256.Sum256([]byte(given))
	return subtle.ConstantTimeCompare(h[:], a.passwordHash[:]) == 1
}

// add records a sample, dropping the oldest when the ring is full.
func (a *admin) add(p adminSample) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.samples) < adminSamples {
		a.samples = append(a.samples, p)
		return
	}
	a.samples[a.head] = p
	a.head = (a.head + 1) % adminSamples
}

// series returns the samples, oldest first.
func (a *admin) series() []adminSample {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]adminSample, 0, len(a.samples))
	out = append(out, a.samples[a.head:]...)
	return append(out, a.samples[:a.head]...)
}

// sampleOnce takes one sample of the server's figures.
func (s *Server) adminSample() {
	var snap metrics.Snapshot
	s.snapshot(&snap, false)
	p := adminSample{at: time.Now()}
	for _, e := range snap.Endpoints {
		p.conns += e.Open
		p.msgsIn += e.MessagesIn
		p.msgsOut += e.MessagesOut
	}
	if snap.Hub != nil {
		p.subscriptions = snap.Hub.Subscriptions
	}
	s.admin.add(p)
}

// adminSampler samples every admin.every until stop is closed.
func (s *Server) adminSampler(stop <-chan struct{}) {
	s.adminSample()
	t := time.NewTicker(s.admin.every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			s.adminSample()
		}
	}
}

// adminStats is the JSON of /admin/api/stats.
type adminStats struct {
	Now             int64                    `json:"now"` // Unix milliseconds
	Version         string                   `json:"version"`
	Connections     map[string]int           `json:"connections"` // by endpoint
	HTTPConnections int                      `json:"http_connections"`
	MessagesIn      uint64                   `json:"messages_in"`
	MessagesOut     uint64                   `json:"messages_out"`
	MessagesInRate  float64                  `json:"messages_in_per_second"`
	MessagesOutRate float64                  `json:"messages_out_per_second"`
	SlowDisconnects uint64                   `json:"slow_disconnects"`
	Dropped         uint64                   `json:"dropped"`
	Hub             *adminHub                `json:"hub"`
	Broker          *adminBroker             `json:"broker"`
	Budget          *adminBudget             `json:"budget"`
	EventLoops      int                      `json:"event_loops"`
	TopChannels     []adminChannel           `json:"top_channels"`
	Nodes           []adminNode              `json:"nodes"`
	Series          map[string][]json.Number `json:"series"`
}

type adminHub struct {
	Clients       int    `json:"clients"`
	Users         int    `json:"users"`
	Channels      int    `json:"channels"`
	Subscriptions int    `json:"subscriptions"`
	Publications  uint64 `json:"publications"`
	Deliveries    uint64 `json:"deliveries"`
}

type adminBroker struct {
	Type          string `json:"type"`
	Up            bool   `json:"up"`
	Error         string `json:"error,omitempty"`
	Received      uint64 `json:"received"`
	PublishErrors uint64 `json:"publish_errors"`
	Gaps          uint64 `json:"gaps"`
}

type adminBudget struct {
	Used      int64  `json:"used_bytes"`
	Limit     int64  `json:"limit_bytes"`
	Evictions uint64 `json:"evictions"`
}

type adminChannel struct {
	Channel     string `json:"channel"`
	Subscribers int    `json:"subscribers"`
}

// adminNode is a row of the nodes table: this node (Self) and, in a
// cluster, one per other node the cluster reports. The page renders any
// number of rows.
type adminNode struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	Version       string `json:"version"`
	Clients       int    `json:"clients"`
	Users         int    `json:"users"`
	Channels      int    `json:"channels"`
	Subscriptions int    `json:"subscriptions"`
	UptimeSeconds int64  `json:"uptime_seconds"`
	Self          bool   `json:"self"`
}

// adminMux returns the handler of the admin address: /metrics (unless
// metrics are off), /admin (when enabled), /debug/pprof/ (when enabled),
// /healthz and /readyz.
func (s *Server) adminMux() *http.ServeMux {
	mux := http.NewServeMux()
	if s.metrics != nil {
		mux.Handle("GET /metrics", s.metrics.Handler())
	}
	if s.admin != nil {
		page, err := fs.Sub(web.AdminFS, "admin")
		if err != nil {
			panic(err) // the embedded tree is fixed at build time
		}
		files := http.StripPrefix("/admin/", http.FileServerFS(page))
		mux.Handle("GET /admin", http.RedirectHandler("/admin/", http.StatusMovedPermanently))
		mux.Handle("GET /admin/", s.adminAuth(adminHeaders(files)))
		mux.Handle("GET /admin/api/stats", s.adminAuth(http.HandlerFunc(s.handleAdminStats)))
	}
	if s.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", s.handleHealthz)
	mux.HandleFunc("GET /readyz", s.handleReadyz)
	return mux
}

// adminAuth lets only requests with the admin password through; others
// get 401 with a Basic challenge.
func (s *Server) adminAuth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.admin.authorized(r) {
			if r.Header.Get("Authorization") != "" {
				s.log.Warn("admin: wrong password", "remote", r.RemoteAddr, "path", r.URL.Path)
			}
			w.Header().Set("WWW-Authenticate", `Basic realm="wsgate admin", charset="UTF-8"`)
			plain(w, http.StatusUnauthorized, "401 unauthorized: the admin page needs the admin password")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// adminCSP allows the admin page its own script, style and API, and
// nothing else: no inline script, no other origin.
const adminCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// adminHeaders adds the admin page's security headers.
func adminHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", adminCSP)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

// handleAdminStats answers the admin page's figures.
func (s *Server) handleAdminStats(w http.ResponseWriter, r *http.Request) {
	var snap metrics.Snapshot
	s.snapshot(&snap, false)
	st := adminStats{
		Now:             time.Now().UnixMilli(),
		Version:         s.cfg.Version,
		Connections:     map[string]int{},
		HTTPConnections: snap.HTTPConns,
		EventLoops:      len(snap.Engine.Loops),
		TopChannels:     []adminChannel{},
		Nodes:           []adminNode{},
	}
	for _, e := range snap.Endpoints {
		st.Connections[e.Name] = e.Open
		st.MessagesIn += e.MessagesIn
		st.MessagesOut += e.MessagesOut
		st.SlowDisconnects += e.SlowDisconnects
		st.Dropped += e.Dropped
	}
	if b := snap.Budget; b != nil {
		st.Budget = &adminBudget{Used: b.Used, Limit: b.Limit, Evictions: b.Evictions}
	}
	if h := snap.Hub; h != nil {
		st.Hub = &adminHub{Clients: h.Clients, Users: h.Users, Channels: h.Channels,
			Subscriptions: h.Subscriptions, Publications: h.Publications, Deliveries: h.Deliveries}
	}
	if b := snap.Broker; b != nil {
		ab := &adminBroker{Type: fmt.Sprintf("%T", s.broker), Up: b.Up || !b.HealthKnown,
			Received: b.Received, PublishErrors: b.PublishErrors, Gaps: b.Gaps}
		if !ab.Up {
			ab.Error = s.brokerError()
		}
		st.Broker = ab
	}
	if hp := s.hub.Load(); hp != nil {
		st.TopChannels = topChannels(hp.hub.Channels, adminTopChannels)
		self := hp.hub.Info().ID
		for _, info := range hp.hub.Nodes() {
			st.Nodes = append(st.Nodes, adminNode{ID: info.ID, Name: info.Name, Version: info.Version,
				Clients: info.NumClients, Users: info.NumUsers, Channels: info.NumChannels,
				Subscriptions: info.NumSubs, UptimeSeconds: info.UptimeSeconds, Self: info.ID == self})
		}
	}
	series := s.admin.series()
	st.Series = seriesJSON(series)
	if n := len(series); n >= 2 {
		a, b := series[n-2], series[n-1]
		if dt := b.at.Sub(a.at).Seconds(); dt > 0 {
			st.MessagesInRate = rate(a.msgsIn, b.msgsIn, dt)
			st.MessagesOutRate = rate(a.msgsOut, b.msgsOut, dt)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	json.NewEncoder(w).Encode(st)
}

// brokerError returns the broker's health error, if it reports one.
func (s *Server) brokerError() string {
	if hc, ok := s.broker.(interface{ Healthy() error }); ok {
		if err := hc.Healthy(); err != nil {
			return err.Error()
		}
	}
	return ""
}

// topChannels returns the n channels with the most subscribers, most
// first, ties by name.
func topChannels(channels func(string) (map[string]int, error), n int) []adminChannel {
	all, err := channels("")
	out := []adminChannel{}
	if err != nil {
		return out
	}
	for name, subs := range all {
		out = append(out, adminChannel{Channel: name, Subscribers: subs})
	}
	slices.SortFunc(out, func(a, b adminChannel) int {
		if c := cmp.Compare(b.Subscribers, a.Subscribers); c != 0 {
			return c
		}
		return strings.Compare(a.Channel, b.Channel)
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// seriesJSON turns the samples into the page's series: times (Unix
// milliseconds), open connections, messages per second in and out (from
// each sample to the next), subscriptions.
func seriesJSON(ss []adminSample) map[string][]json.Number {
	out := map[string][]json.Number{"t": {}, "connections": {}, "messages_in_per_second": {}, "messages_out_per_second": {}, "subscriptions": {}}
	num := func(v float64) json.Number { return json.Number(fmt.Sprintf("%.4g", v)) }
	for i := 1; i < len(ss); i++ {
		a, b := ss[i-1], ss[i]
		dt := b.at.Sub(a.at).Seconds()
		if dt <= 0 {
			continue
		}
		out["t"] = append(out["t"], json.Number(fmt.Sprint(b.at.UnixMilli())))
		out["connections"] = append(out["connections"], num(float64(b.conns)))
		out["messages_in_per_second"] = append(out["messages_in_per_second"], num(rate(a.msgsIn, b.msgsIn, dt)))
		out["messages_out_per_second"] = append(out["messages_out_per_second"], num(rate(a.msgsOut, b.msgsOut, dt)))
		out["subscriptions"] = append(out["subscriptions"], num(float64(b.subscriptions)))
	}
	return out
}

// rate is the per-second rate of a counter that went from a to b in dt
// seconds.
func rate(a, b uint64, dt float64) float64 {
	if b < a || dt <= 0 {
		return 0
	}
	return float64(b-a) / dt
}
