// Command wsgate-bench is a WebSocket load generator: echo throughput and
// latency, idle connections and server memory, handshakes per second, and
// the effect of slow consumers. Run it with -h for the modes and flags; the
// work is done by internal/loadtest.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/wsgate/wsgate/internal/loadtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := loadtest.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
