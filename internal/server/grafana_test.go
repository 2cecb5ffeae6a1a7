package server

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/wsgate/wsgate"
)

// dashboardFile is the Grafana dashboard of docs/operations.md.
const dashboardFile = "../../docs/grafana/wsgate.json"

// collectQueries returns every "expr" and templating "query" string in a
// decoded dashboard.
func collectQueries(v any, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && (k == "expr" || k == "definition") {
				*out = append(*out, s)
				continue
			}
			collectQueries(x, out)
		}
	case []any:
		for _, x := range v {
			collectQueries(x, out)
		}
	}
}

var (
	promStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers  = regexp.MustCompile(`\{[^}]*\}`)
	promRanges    = regexp.MustCompile(`\[[^\]]*\]`)
	promVariables = regexp.MustCompile(`\$\{?\w+\}?`)
	promIdent     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promGrouping  = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promKeywords  = []string{"and", "or", "unless", "bool", "offset", "le", "instance", "job"}
)

// metricNames returns the metric names a PromQL query reads: the
// identifiers left once strings, label matchers, ranges, variables and
// grouping clauses are removed, that are not functions or keywords.
func metricNames(expr string) []string {
	e := promStrings.ReplaceAllString(expr, `""`)
	e = promMatchers.ReplaceAllString(e, " ")
	e = promRanges.ReplaceAllString(e, " ")
	e = promVariables.ReplaceAllString(e, " ")
	e = promGrouping.ReplaceAllString(e, " ")
	var names []string
	for _, loc := range promIdent.FindAllStringIndex(e, -1) {
		id := e[loc[0]:loc[1]]
		rest := strings.TrimLeft(e[loc[1]:], " ")
		if strings.HasPrefix(rest, "(") || slices.Contains(promKeywords, id) {
			continue // a function, or a keyword
		}
		if loc[0] > 0 && (e[loc[0]-1] >= '0' && e[loc[0]-1] <= '9' || e[loc[0]-1] == '.') {
			continue // part of a number such as 1e9
		}
		names = append(names, id)
	}
	return names
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum by (endpoint) (rate(wsgate_x_total{instance=~"$instance", a="b{c}"}[$__rate_interval]))`: {"wsgate_x_total"},
		`histogram_quantile(0.99, sum by (le) (rate(wsgate_y_bucket[5m]))) / wsgate_z - time()`:       {"wsgate_y_bucket", "wsgate_z"},
		`label_values(wsgate_build_info, instance)`:                                                   {"wsgate_build_info"},
		`-sum(rate(a_total[1m])) and on (instance) b`:                                                 {"a_total", "b"},
	} {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%q) = %q, want %q", expr, got, want)
		}
	}
}

// TestGrafanaDashboard checks that every query of the dashboard reads only
// wsgate's metrics, and only metrics a live server exports: it serves TLS
// and the hub, makes traffic that creates every labelled series (a close,
// a refused handshake, an API call, a ping), then scrapes /metrics.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var queries []string
	collectQueries(dash, &queries)
	if len(queries) < 20 {
		t.Fatalf("only %d queries found", len(queries))
	}

	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cert := newTestCert(t, "grafana")
	cert.write(t, certFile, keyFile)
	cfg := demoConfig()
	cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
	cfg.PingInterval = 20 * 1e6 // 20ms
	ts := startServer(t, cfg)
	trust := clientTLS(cert)
	client := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{TLSClientConfig: trust}}

	c := dial(t, "wss://"+ts.addr+"/ws", &wsgate.Options{TLSConfig: trust})
	write(t, c, wsgate.TextMessage, []byte("x"))
	read(t, c)
	if _, err := tryDial(t, "wss://"+ts.addr+"/ws", &wsgate.Options{TLSConfig: trust, Header: http.Header{"Origin": {"https://elsewhere.example"}}}); err == nil {
		t.Fatal("cross-origin dial succeeded")
	}
	req, _ := http.NewRequest(http.MethodPost, "https://"+ts.addr+"/api/info", strings.NewReader("{}"))
	req.Header.Set("X-API-Key", testAPIKey)
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	waitFor(t, "a ping round trip", func() bool {
		tryRead(c, 30*1e6)
		m := scrapeWith(t, client, "https://"+ts.addr+"/metrics").find("wsgate_ping_rtt_seconds")
		return m != nil && m.Histogram.GetSampleCount() > 0
	})
	c.Close()
	waitDone(t, c)
	waitFor(t, "the close to be counted", func() bool {
		return scrapeWith(t, client, "https://"+ts.addr+"/metrics").find("wsgate_connections_closed_total") != nil
	})
	// TLS connections run on reader goroutines; the event loops' series
	// appear with a connection on them, here one to a plain server (the
	// engine is the process's).
	plain := startServer(t, Config{Heartbeat: -1})
	dial(t, plain.wsURL(), nil)
	waitFor(t, "an event loop", func() bool { return len(wsgate.ReadEngineStats().Loops) > 0 })
	m := scrapeWith(t, client, "https://"+ts.addr+"/metrics")

	checked := map[string]bool{}
	for _, q := range queries {
		names := metricNames(q)
		if len(names) == 0 {
			t.Errorf("query %q reads no metric", q)
		}
		for _, name := range names {
			if !strings.HasPrefix(name, "wsgate_") {
				t.Errorf("query %q reads %s, not one of wsgate's metrics", q, name)
				continue
			}
			family := name
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(name, suffix); ok && m[base] != nil && m[base].GetType() == dto.MetricType_HISTOGRAM {
					family = base
				}
			}
			if m[family] == nil {
				t.Errorf("query %q reads %s, which the server does not export", q, name)
			}
			checked[family] = true
		}
	}
	// Every metric of ours is on the dashboard somewhere, and in the
	// reference of docs/operations.md.
	ref, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	for name := range m {
		if !strings.HasPrefix(name, "wsgate_") {
			continue
		}
		if !checked[name] && name != "wsgate_build_info" {
			t.Errorf("the dashboard does not show %s", name)
		}
		if !strings.Contains(string(ref), "| `"+name+"` |") {
			t.Errorf("docs/operations.md's metrics reference lacks %s", name)
		}
	}
}
