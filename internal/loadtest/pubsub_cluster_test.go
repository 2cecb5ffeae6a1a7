package loadtest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
)

// TestPubSubSeveralURLs spreads the subscribers over two addresses of one
// hub, as over the nodes of a cluster, publishes through a third, and
// reports the CPU of the given processes per publication.
func TestPubSubSeveralURLs(t *testing.T) {
	h := newTestHub(t, hubOptions{})
	var dials [3]atomic.Int64
	urls := make([]string, 3)
	for i := range urls {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			dials[i].Add(1)
			h.serveWS(w, r)
		}))
		t.Cleanup(srv.Close)
		urls[i] = "ws" + strings.TrimPrefix(srv.URL, "http") + "/connection/websocket"
	}
	cfg := pubsubCfg(urls[0], MeasureRate)
	cfg.N = 6
	cfg.URLs = urls[:2]
	cfg.PublishURL = urls[2]
	cfg.NodePIDs = []int{os.Getpid()}
	rep := run(t, cfg)
	noErrors(t, rep)
	if got := [3]int64{dials[0].Load(), dials[1].Load(), dials[2].Load()}; got != [3]int64{3, 3, 1} {
		t.Errorf("dials per address %v, want the 6 subscribers split 3 and 3 and the publisher on the third", got)
	}
	ps := rep.PubSub
	if ps == nil || ps.Best < 0 {
		t.Fatalf("pubsub report %+v", ps)
	}
	st := ps.Steps[ps.Best]
	if !st.Pass || st.Delivered != 6*st.Publications {
		t.Errorf("step %+v", st)
	}
	if len(st.Nodes) != 1 || st.Nodes[0].PID != os.Getpid() || st.Nodes[0].CPUPercent < 0 || st.Nodes[0].PerPublicationUS < 0 {
		t.Errorf("node CPU %+v", st.Nodes)
	}
	var b strings.Builder
	rep.WriteText(&b)
	if !strings.Contains(b.String(), "µs per publication") {
		t.Errorf("the summary lacks the node CPU:\n%s", b.String())
	}

	// An API publisher goes to -publish-url's host by default.
	cfg = pubsubCfg(urls[0], MeasureRate)
	cfg.PublishURL, cfg.Publish = "ws://node3.example:8000/connection/websocket", PublishAPI
	cfg.pubsubDefaults()
	if cfg.APIURL != "http://node3.example:8000/api/publish" {
		t.Errorf("API URL %q", cfg.APIURL)
	}
}

func TestParseArgsSeveralURLs(t *testing.T) {
	cfg, _, err := parseArgs([]string{"pubsub", "-node-pids", "10, 11", "-publish-url", "ws://c:1/x", "ws://a:1/x,ws://b:1/x"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.URL != "ws://a:1/x" || len(cfg.URLs) != 2 || cfg.URLs[1] != "ws://b:1/x" || cfg.PublishURL != "ws://c:1/x" ||
		len(cfg.NodePIDs) != 2 || cfg.NodePIDs[1] != 11 {
		t.Errorf("parsed %+v", cfg)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"echo", "ws://a:1/x,ws://b:1/x"}, "only work with pubsub"},
		{[]string{"pubsub", "-node-pids", "1,x", "ws://a:1/x"}, "-node-pids"},
	} {
		if _, _, err := parseArgs(tc.args, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.args, err, tc.want)
		}
	}
	cfg = pubsubCfg("ws://a:1/x", MeasureRate)
	cfg.URLs = []string{"ws://a:1/x", "http://b:1/x"}
	cfg.pubsubDefaults()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "http://b:1/x") {
		t.Errorf("a bad URL in the list: %v", err)
	}
}
