// Command wsgate runs the wsgate echo server: the tutorial's WebSocket echo
// endpoint with heartbeats, its browser page, health endpoints and a
// graceful shutdown. Run "wsgate -help" for the flags; docs/server.md
// describes them all.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/wsgate/wsgate/internal/server"
)

func main() {
	o, err := parseArgs(os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, errHelp):
		return
	case err != nil:
		os.Exit(2)
	}
	if o.showVersion {
		fmt.Println("wsgate", o.server.Version)
		return
	}
	log := newLogger(o, os.Stderr)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal cancels ctx and starts the graceful shutdown; a
	// second one means "now". Registered up front, so none can be missed.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		sig := <-sigs
		log.Error("second signal, exiting at once", "signal", sig.String())
		os.Exit(1)
	}()

	if err := server.Run(ctx, o.server, log); err != nil {
		log.Error("wsgate stopped", "err", err)
		os.Exit(1)
	}
}
