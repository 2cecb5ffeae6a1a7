package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/broker/natsbroker"
)

// nopHandler receives what a broker delivers, and drops it.
type nopHandler struct{}

func (nopHandler) HandlePublication(string, *broker.Publication, broker.StreamPosition) {}
func (nopHandler) HandleJoin(string, *broker.ClientInfo)                                {}
func (nopHandler) HandleLeave(string, *broker.ClientInfo)                               {}
func (nopHandler) HandleGap([]string)                                                   {}

// BenchmarkClusterBroker measures the NATS side of a cluster: a node's
// broker publishing to many channels at once (as a node's clients and
// API do) on a NATS cluster of three servers with three replicas, all in
// this process. cpu-µs/op is the CPU the process spends per publication:
// the broker's client work plus the three servers' routing, storage and
// replication (the servers are the bulk of it; see docs/cluster.md). The
// time per operation is wall time with 16 publishers per GOMAXPROCS, so
// 1e9 / ns/op is the publications per second this machine sustained.
//
//	go test -run '^$' -bench ClusterBroker -benchtime 5s ./internal/server
func BenchmarkClusterBroker(b *testing.B) {
	servers := startNATSCluster(b)
	br, err := natsbroker.New(natsbroker.Options{
		URLs:     natsURLs(servers...),
		Replicas: 3,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := br.Run(ctx, nopHandler{}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cancel()
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		br.Close(cctx)
	})
	data := []byte(`{"text":"a message of about sixty-four bytes, as chat has them"}`)
	for _, tc := range []struct {
		name string
		opts broker.PublishOptions
	}{
		{"NoHistory", broker.PublishOptions{}},
		{"History", broker.PublishOptions{HistorySize: 100, HistoryTTL: time.Hour}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var id atomic.Int64
			b.SetParallelism(16)
			cpu := processCPU()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ch := fmt.Sprintf("bench-%s-%d", tc.name, id.Add(1))
				for pb.Next() {
					if _, err := br.Publish(ctx, ch, data, tc.opts); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			if used := processCPU() - cpu; used > 0 {
				b.ReportMetric(float64(used.Microseconds())/float64(b.N), "cpu-µs/op")
			}
		})
	}
}
