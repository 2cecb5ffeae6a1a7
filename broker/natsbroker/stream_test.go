package natsbroker

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/broker/brokertest"
)

func streamConfig(t *testing.T, url, name string) jetstream.StreamConfig {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().Config
}

// Run updates an existing stream to what the broker needs and keeps the
// limits an operator set on it.
func TestRunUpdatesStreamsKeepingLimits(t *testing.T) {
	ts := startTestServer(t, EmbeddedOptions{})
	nc, err := nats.Connect(ts.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "WSGATE_HISTORY", Subjects: []string{"wsgate.h.>"}, MaxBytes: 1 << 30, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}

	b := newTestBroker(t, Options{URLs: ts.url})
	runTestBroker(t, b, brokertest.NewRecorder(t))
	cfg := streamConfig(t, ts.url, "WSGATE_HISTORY")
	if cfg.MaxBytes != 1<<30 {
		t.Errorf("MaxBytes %d, the operator's limit was lost", cfg.MaxBytes)
	}
	if !cfg.AllowMsgTTL || !cfg.AllowRollup || !cfg.AllowDirect || cfg.RePublish == nil || len(cfg.Subjects) != 2 {
		t.Errorf("stream not updated: %+v", cfg)
	}
	if _, err := b.Publish(ctx, "room", []byte("x"), histOpts(5)); err != nil {
		t.Fatal(err)
	}
}

// A publication asking for a longer idempotency TTL than the window widens
// the window, and a node starting later does not narrow it.
func TestIdempotencyWindowWidens(t *testing.T) {
	ts := startTestServer(t, EmbeddedOptions{})
	b := newTestBroker(t, Options{URLs: ts.url})
	runTestBroker(t, b, brokertest.NewRecorder(t))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	opts := histOpts(5)
	opts.IdempotencyKey, opts.IdempotentResultTTL = "k", time.Hour
	first, err := b.Publish(ctx, "room", []byte("a"), opts)
	if err != nil {
		t.Fatal(err)
	}
	if d := streamConfig(t, ts.url, "WSGATE_HISTORY").Duplicates; d < time.Hour {
		t.Fatalf("duplicate window %v after a publication asked for an hour", d)
	}
	later := newTestBroker(t, Options{URLs: ts.url})
	runTestBroker(t, later, brokertest.NewRecorder(t))
	if d := streamConfig(t, ts.url, "WSGATE_HISTORY").Duplicates; d < time.Hour {
		t.Fatalf("a node starting later narrowed the window to %v", d)
	}
	again, err := later.Publish(ctx, "room", []byte("b"), opts)
	if err != nil || again != first {
		t.Fatalf("repeated key on another node: %+v, %v; first %+v", again, err, first)
	}
}
