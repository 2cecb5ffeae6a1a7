package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/internal/metrics"
)

// scrape fetches url and parses it with Prometheus' text parser.
func scrape(t *testing.T, url string) families {
	t.Helper()
	return scrapeWith(t, http.DefaultClient, url)
}

// scrapeWith is scrape with a client of the test's.
func scrapeWith(t *testing.T, client *http.Client, url string) families {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: status %d", url, res.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("scrape %s: not the text format: %v", url, err)
	}
	return families(mf)
}

// families are the parsed metric families of one scrape.
type families map[string]*dto.MetricFamily

// find returns the sample of name whose labels include every one of
// labels ("k=v"), or nil.
func (f families) find(name string, labels ...string) *dto.Metric {
	mf := f[name]
	if mf == nil {
		return nil
	}
	for _, m := range mf.Metric {
		have := map[string]string{}
		for _, lp := range m.Label {
			have[lp.GetName()] = lp.GetValue()
		}
		ok := true
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			if have[k] != v {
				ok = false
				break
			}
		}
		if ok {
			return m
		}
	}
	return nil
}

// value returns the value of a counter or gauge sample, or -1 when absent.
func (f families) value(name string, labels ...string) float64 {
	m := f.find(name, labels...)
	switch {
	case m == nil:
		return -1
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return -1
}

// want checks one sample's value.
func (f families) want(t *testing.T, value float64, name string, labels ...string) {
	t.Helper()
	if got := f.value(name, labels...); got != value {
		t.Errorf("%s%v = %v, want %v", name, labels, got, value)
	}
}

// TestMetrics scrapes /metrics after real traffic on both endpoints and
// the API, and checks that each counter moved by what the traffic did.
func TestMetrics(t *testing.T) {
	cfg := demoConfig()
	cfg.MaxConns = 3
	cfg.PingInterval = 20 * time.Millisecond
	ts := startServer(t, cfg)
	url := ts.httpURL() + "/metrics"

	before := scrape(t, url)
	before.want(t, 0, "wsgate_connections_opened_total", "endpoint=ws")
	before.want(t, 1, "wsgate_build_info", "version=dev")
	if before.find("go_goroutines") == nil || before.find("process_resident_memory_bytes") == nil {
		t.Error("the Go and process collectors are missing")
	}

	// /ws: three messages echoed, then a normal close.
	echoC := dial(t, ts.wsURL(), &wsgate.Options{PingInterval: -1})
	sizes := []int{10, 200, 3000}
	total := 0
	for _, n := range sizes {
		write(t, echoC, wsgate.BinaryMessage, make([]byte, n))
		if _, p := read(t, echoC); len(p) != n {
			t.Fatalf("echo of %d bytes came back with %d", n, len(p))
		}
		total += n
	}
	// The server pings every 20ms; the client answers while reading.
	waitFor(t, "a ping round trip on /ws", func() bool {
		tryRead(echoC, 30*time.Millisecond)
		return scrapeQuiet(url).find("wsgate_ping_rtt_seconds") != nil &&
			scrapeQuiet(url).find("wsgate_ping_rtt_seconds").Histogram.GetSampleCount() > 0
	})

	// A page from another site, refused.
	h := http.Header{"Origin": {"https://evil.example"}}
	if _, err := tryDial(t, ts.wsURL(), &wsgate.Options{Header: h}); err == nil {
		t.Fatal("cross-origin dial succeeded")
	}

	// The hub: a subscriber, two publications through the API, a refused
	// key, an unknown method, a refused token.
	sub := dialHub(t, ts)
	sub.connect("")
	sub.subscribe("news")
	for i := range 2 {
		publish(t, ts.httpURL()+"/api", "news", map[string]int{"n": i})
		if ch, _ := sub.pub(); ch != "news" {
			t.Fatalf("publication on %q", ch)
		}
	}
	if st, _ := apiCall(t, ts.httpURL()+"/api", "wrong-key", "publish", map[string]any{"channel": "news", "data": 1}); st != http.StatusUnauthorized {
		t.Fatalf("wrong key: %d", st)
	}
	if st, _ := apiCall(t, ts.httpURL()+"/api", testAPIKey, "nonsense", map[string]any{}); st != http.StatusNotFound {
		t.Fatalf("unknown method: %d", st)
	}
	bad := dialHub(t, ts)
	bad.send(&protocol.Command{Connect: &protocol.ConnectRequest{Token: "not-a-jwt"}})
	if ce := bad.closed(); ce.Code != 3500 {
		t.Fatalf("bad token closed with %d", ce.Code)
	}

	// The connection limit (3): once the refused one has gone, echoC and
	// sub are open, a third fits, a fourth is refused.
	waitFor(t, "the refused hub client to be gone", func() bool { return ts.ConnCount() == 2 })
	third := dial(t, ts.wsURL(), &wsgate.Options{PingInterval: -1})
	_, err := tryDial(t, ts.wsURL(), nil)
	if st, _ := handshakeStatus(t, err); st != http.StatusServiceUnavailable {
		t.Fatalf("over the limit: %d", st)
	}
	third.Close()
	waitDone(t, third)

	echoC.Close()
	waitDone(t, echoC)
	waitFor(t, "the /ws connections to be gone", func() bool {
		return scrapeQuiet(url).value("wsgate_connections", "endpoint=ws") == 0
	})

	// The broker's own figures are asked for at most every 2s.
	waitFor(t, "the history figures", func() bool {
		return scrapeQuiet(url).value("wsgate_broker_history_publications") == 2
	})

	m := scrape(t, url)
	m.want(t, 2*float64(len(`{"n":0}`)), "wsgate_broker_history_bytes")
	m.want(t, 0, "wsgate_broker_reconnects_total")
	m.want(t, 0, "wsgate_connections", "endpoint=ws")
	m.want(t, 1, "wsgate_connections", "endpoint=hub")
	m.want(t, 2, "wsgate_connections_opened_total", "endpoint=ws")
	m.want(t, 2, "wsgate_connections_opened_total", "endpoint=hub")
	m.want(t, 2, "wsgate_connections_closed_total", "endpoint=ws", "code=1000")
	m.want(t, 1, "wsgate_connections_closed_total", "endpoint=hub", "code=3500")
	m.want(t, 1, "wsgate_handshake_failures_total", "endpoint=ws", "reason=origin")
	m.want(t, 1, "wsgate_handshake_failures_total", "endpoint=ws", "reason=limit")
	m.want(t, 1, "wsgate_handshake_failures_total", "endpoint=hub", "reason=auth")
	m.want(t, float64(len(sizes)), "wsgate_messages_received_total", "endpoint=ws")
	m.want(t, float64(total), "wsgate_received_bytes_total", "endpoint=ws")
	m.want(t, float64(len(sizes)), "wsgate_messages_sent_total", "endpoint=ws")
	m.want(t, float64(total), "wsgate_sent_bytes_total", "endpoint=ws")
	m.want(t, 0, "wsgate_send_queue_dropped_messages_total", "endpoint=ws")
	m.want(t, 0, "wsgate_slow_consumer_disconnects_total", "endpoint=hub")
	if v := m.value("wsgate_messages_received_total", "endpoint=hub"); v < 3 { // connect, subscribe, the bad connect
		t.Errorf("hub messages received = %v, want at least 3", v)
	}
	if v := m.value("wsgate_messages_sent_total", "endpoint=hub"); v < 4 { // connect and subscribe replies, 2 publications
		t.Errorf("hub messages sent = %v, want at least 4", v)
	}
	m.want(t, 1, "wsgate_hub_clients")
	m.want(t, 1, "wsgate_hub_channels")
	m.want(t, 1, "wsgate_hub_subscriptions")
	m.want(t, 2, "wsgate_hub_publications_total")
	m.want(t, 2, "wsgate_hub_deliveries_total")
	if hm := m.find("wsgate_hub_publish_to_write_seconds"); hm == nil || hm.Histogram.GetSampleCount() != 2 {
		t.Errorf("publish-to-write histogram %v, want 2 publications", hm)
	}
	m.want(t, 2, "wsgate_broker_received_publications_total")
	m.want(t, 0, "wsgate_broker_publish_errors_total")
	m.want(t, 1, "wsgate_broker_up")
	m.want(t, 2, "wsgate_api_requests_total", "method=publish", "status=200")
	m.want(t, 1, "wsgate_api_requests_total", "method=publish", "status=401")
	m.want(t, 1, "wsgate_api_requests_total", "method=unknown", "status=404")
	if hm := m.find("wsgate_api_request_duration_seconds", "method=publish"); hm == nil || hm.Histogram.GetSampleCount() != 3 {
		t.Errorf("API duration histogram: %v", hm)
	}
	m.want(t, DefaultMemoryBudget, "wsgate_memory_budget_limit_bytes")
	if m.value("wsgate_memory_budget_used_bytes") < 0 {
		t.Error("no memory budget figure")
	}
	if m.value("wsgate_engine_connections") < 1 {
		t.Errorf("engine connections = %v", m.value("wsgate_engine_connections"))
	}
	rtt := m.find("wsgate_ping_rtt_seconds")
	if rtt == nil || rtt.Histogram.GetSampleCount() == 0 || rtt.Histogram.GetSampleSum() <= 0 {
		t.Errorf("ping RTT histogram: %v", rtt)
	}
	if m.find("wsgate_tls_certificate_expiry_timestamp_seconds") != nil {
		t.Error("TLS figures without TLS")
	}

	// Counters never go backwards, and a second scrape does not count a
	// round trip again.
	again := scrape(t, url)
	for _, name := range []string{"wsgate_messages_received_total", "wsgate_sent_bytes_total"} {
		for _, ep := range []string{"endpoint=ws", "endpoint=hub"} {
			if again.value(name, ep) < m.value(name, ep) {
				t.Errorf("%s{%s} went back from %v to %v", name, ep, m.value(name, ep), again.value(name, ep))
			}
		}
	}
	if n := again.find("wsgate_ping_rtt_seconds").Histogram.GetSampleCount(); n != rtt.Histogram.GetSampleCount() {
		t.Errorf("RTT samples went from %d to %d with no connection on /ws", rtt.Histogram.GetSampleCount(), n)
	}
}

// scrapeQuiet is scrape for polling: errors give an empty result.
func scrapeQuiet(url string) families {
	res, err := http.Get(url)
	if err != nil {
		return families{}
	}
	defer res.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		return families{}
	}
	return families(mf)
}

// TestMetricsSlowConsumer checks that a hub subscriber that stops reading
// is counted as a slow-consumer disconnect (3008).
func TestMetricsSlowConsumer(t *testing.T) {
	ts := startServer(t, demoConfig())
	url := ts.httpURL() + "/metrics"
	sub := dialHub(t, ts)
	sub.connect("")
	sub.subscribe("firehose")
	// From now on the subscriber reads nothing: its client's receive
	// queue, the sockets' buffers and then its send queue on the server
	// (1 MiB) fill up.
	data := strings.Repeat("x", 60<<10)
	for i := 0; i < 1000; i++ {
		status, _ := apiCall(t, ts.httpURL()+"/api", testAPIKey, "publish", map[string]any{"channel": "firehose", "data": map[string]string{"x": data}})
		if status != http.StatusOK {
			t.Fatalf("publish: %d", status)
		}
		if i%20 == 19 && scrapeQuiet(url).value("wsgate_slow_consumer_disconnects_total", "endpoint=hub") == 1 {
			break
		}
	}
	waitFor(t, "a slow-consumer disconnect", func() bool {
		m := scrapeQuiet(url)
		return m.value("wsgate_slow_consumer_disconnects_total", "endpoint=hub") == 1 &&
			m.value("wsgate_connections_closed_total", "endpoint=hub", "code=3008") == 1
	})
}

// TestMetricsDisabled checks that DisableMetrics removes /metrics.
func TestMetricsDisabled(t *testing.T) {
	ts := startServer(t, Config{Heartbeat: -1, DisableMetrics: true})
	if st, _, _ := httpGet(t, ts.httpURL()+"/metrics"); st != http.StatusNotFound {
		t.Fatalf("/metrics with metrics off: %d", st)
	}
}

func TestCodeLabel(t *testing.T) {
	for code, want := range map[int]string{1000: "1000", 1006: "1006", 3008: "3008", 3500: "3500", 4001: "other", 999: "other", 2000: "other"} {
		if got := metrics.CodeLabel(code); got != want {
			t.Errorf("label of %d = %q, want %q", code, got, want)
		}
	}
	if got := closeCode(errors.New("reset")); got != 1006 {
		t.Errorf("closeCode(plain error) = %d", got)
	}
	if got := closeCode(fmt.Errorf("x: %w", &wsgate.CloseError{Code: 1001})); got != 1001 {
		t.Errorf("closeCode(wrapped 1001) = %d", got)
	}
}
