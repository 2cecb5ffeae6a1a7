package natsbroker

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate/broker"
)

// counter is an EventHandler that counts publications.
type counter struct {
	n    atomic.Int64
	want atomic.Int64
	done chan struct{}
}

func (c *counter) HandlePublication(string, *broker.Publication, broker.StreamPosition) {
	if c.n.Add(1) == c.want.Load() {
		close(c.done)
	}
}
func (*counter) HandleJoin(string, *broker.ClientInfo)  {}
func (*counter) HandleLeave(string, *broker.ClientInfo) {}
func (*counter) HandleGap([]string)                     {}

// Publish cost on one node against a NATS server in the same process (over
// loopback TCP, file storage), with and without history.
func BenchmarkPublish(b *testing.B) {
	ts := startTestServer(b, EmbeddedOptions{})
	br := newTestBroker(b, Options{URLs: ts.url})
	runTestBroker(b, br, &counter{done: make(chan struct{})})
	ctx := context.Background()
	data := []byte(`{"text":"a message of about sixty-four bytes, as chat has them"}`)
	b.Run("NoHistory", func(b *testing.B) {
		for b.Loop() {
			if _, err := br.Publish(ctx, "bench-nohistory", data, broker.PublishOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("HistoryOneChannel", func(b *testing.B) {
		for b.Loop() {
			if _, err := br.Publish(ctx, "bench-history", data, histOpts(100)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("HistoryManyChannels", func(b *testing.B) {
		var id atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			ch := fmt.Sprintf("bench-many-%d", id.Add(1))
			for pb.Next() {
				if _, err := br.Publish(ctx, ch, data, histOpts(100)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// From Publish on one node to delivery on another, with history: the
// per-publication cost of the whole path, stream and republish included.
func BenchmarkFanOut(b *testing.B) {
	ts := startTestServer(b, EmbeddedOptions{})
	pub := newTestBroker(b, Options{URLs: ts.url})
	runTestBroker(b, pub, &counter{done: make(chan struct{})})
	c := &counter{done: make(chan struct{})}
	sub := newTestBroker(b, Options{URLs: ts.url})
	runTestBroker(b, sub, c)
	if err := sub.Subscribe(context.Background(), "bench-fanout"); err != nil {
		b.Fatal(err)
	}
	data := []byte(`{"text":"a message of about sixty-four bytes, as chat has them"}`)
	c.want.Store(int64(b.N))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := pub.Publish(context.Background(), "bench-fanout", data, histOpts(100)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	select {
	case <-c.done:
	case <-time.After(time.Minute):
		b.Fatalf("%d of %d delivered", c.n.Load(), b.N)
	}
}
