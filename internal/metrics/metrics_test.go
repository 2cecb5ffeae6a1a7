package metrics_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/hub"
	"github.com/wsgate/wsgate/internal/metrics"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCodeLabel(t *testing.T) {
	for code, want := range map[int]string{1000: "1000", 1015: "1015", 1016: "other", 3000: "3000", 3999: "3999", 4000: "other", 0: "other"} {
		if got := metrics.CodeLabel(code); got != want {
			t.Errorf("CodeLabel(%d) = %q, want %q", code, got, want)
		}
	}
}

// TestNilMetrics checks that a nil *Metrics records nothing and does not
// panic, so that a server with metrics off calls it unconditionally.
func TestNilMetrics(t *testing.T) {
	var m *metrics.Metrics
	m.ConnOpened(metrics.EndpointWS)
	m.ConnClosed(metrics.EndpointWS, 1000)
	m.HandshakeFailed(metrics.EndpointHub, metrics.ReasonAuth)
	m.APIRequest("publish", 200, time.Millisecond)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 404 {
		t.Errorf("nil Handler answered %d", rec.Code)
	}
}

// TestSnapshotExported checks that a snapshot's figures come out under
// their names, parsed with Prometheus' text parser.
func TestSnapshotExported(t *testing.T) {
	m := metrics.New(metrics.Config{Version: "v1", Snapshot: func(s *metrics.Snapshot) {
		s.Endpoints = []metrics.Endpoint{{Name: "ws", Open: 3, MessagesIn: 10, BytesOut: 99}}
		s.Hub = &hub.Stats{Subscriptions: 7, Deliveries: 5}
		s.Broker = &metrics.Broker{HealthKnown: true, Up: false, Gaps: 2}
		s.RTTs = []time.Duration{time.Millisecond, 3 * time.Millisecond}
	}})
	m.ConnClosed("ws", 4321)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string) float64 {
		f := mf[name]
		if f == nil || len(f.Metric) == 0 {
			t.Fatalf("%s missing", name)
		}
		x := f.Metric[0]
		switch {
		case x.Gauge != nil:
			return x.Gauge.GetValue()
		case x.Counter != nil:
			return x.Counter.GetValue()
		}
		return float64(x.Histogram.GetSampleCount())
	}
	for name, want := range map[string]float64{
		"wsgate_connections": 3, "wsgate_messages_received_total": 10, "wsgate_sent_bytes_total": 99,
		"wsgate_hub_subscriptions": 7, "wsgate_hub_deliveries_total": 5, "wsgate_broker_up": 0,
		"wsgate_broker_gaps_total": 2, "wsgate_ping_rtt_seconds": 2, "wsgate_build_info": 1,
	} {
		if got := value(name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if l := mf["wsgate_connections_closed_total"].Metric[0].Label; l[0].GetValue() != "other" && l[1].GetValue() != "other" {
		t.Errorf("code 4321 labelled %v", l)
	}
	if mf["wsgate_memory_budget_limit_bytes"] != nil || mf["wsgate_tls_certificate_loads_total"] != nil {
		t.Error("figures exported that the snapshot did not have")
	}
}

// plainBroker is a broker without presence, health or Close.
type plainBroker struct{ broker.Broker }

// TestCountBroker checks that the wrapper counts and keeps the wrapped
// broker's capabilities.
func TestCountBroker(t *testing.T) {
	mem := broker.NewMemory(broker.MemoryConfig{})
	b, n := metrics.CountBroker(mem)
	if _, ok := b.(broker.PresenceManager); !ok {
		t.Error("the wrapper of a PresenceManager is not one")
	}
	if _, ok := b.(broker.Closer); !ok {
		t.Error("the wrapper is not a Closer")
	}
	h := &recorder{}
	ctx := context.Background()
	if err := b.Run(ctx, h); err != nil {
		t.Fatal(err)
	}
	defer b.(broker.Closer).Close(ctx)
	if err := b.Subscribe(ctx, "ch"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, "ch", []byte("x"), broker.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for n.Received() != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n.Received() != 1 || n.PublishErrors() != 0 {
		t.Errorf("received %d, publish errors %d", n.Received(), n.PublishErrors())
	}

	pb, _ := metrics.CountBroker(plainBroker{mem})
	if _, ok := pb.(broker.PresenceManager); ok {
		t.Error("the wrapper of a broker without presence claims presence")
	}
	if err := pb.(broker.HealthChecker).Healthy(); err != nil {
		t.Errorf("Healthy of a broker that cannot tell: %v", err)
	}
	if _, ok := b.(broker.NodeDirectory); ok {
		t.Error("the wrapper of a single-node broker claims a node directory")
	}
	for _, inner := range []broker.Broker{directoryMemory{mem}, directoryBroker{mem}} {
		w, _ := metrics.CountBroker(inner)
		nd, ok := w.(broker.NodeDirectory)
		if !ok {
			t.Fatalf("the wrapper of %T is not a NodeDirectory", inner)
		}
		if nodes := nd.Nodes(); len(nodes) != 1 || nodes[0].ID != "n1" {
			t.Errorf("Nodes through the wrapper: %+v", nodes)
		}
		_, isPM := w.(broker.PresenceManager)
		_, innerPM := inner.(broker.PresenceManager)
		if isPM != innerPM {
			t.Errorf("wrapper of %T: PresenceManager %v, want %v", inner, isPM, innerPM)
		}
	}
}

// directoryBroker and directoryMemory add a fixed node directory to a
// broker (directoryMemory keeps Memory's presence), to check that the
// wrapper keeps that capability.
type directoryBroker struct{ broker.Broker }
type directoryMemory struct{ *broker.Memory }

func (directoryMemory) AnnounceNode(context.Context, broker.NodeInfo) error { return nil }
func (directoryMemory) Nodes() []broker.NodeInfo                            { return []broker.NodeInfo{{ID: "n1"}} }

func (directoryBroker) AnnounceNode(context.Context, broker.NodeInfo) error { return nil }
func (directoryBroker) Nodes() []broker.NodeInfo                            { return []broker.NodeInfo{{ID: "n1"}} }

type recorder struct{}

func (*recorder) HandlePublication(string, *broker.Publication, broker.StreamPosition) {}
func (*recorder) HandleJoin(string, *broker.ClientInfo)                                {}
func (*recorder) HandleLeave(string, *broker.ClientInfo)                               {}
func (*recorder) HandleGap([]string)                                                   {}
