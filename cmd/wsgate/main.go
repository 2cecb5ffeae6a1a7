// Command wsgate runs the wsgate echo server: the tutorial's WebSocket echo
// endpoint with heartbeats, its browser page, health endpoints and a
// graceful shutdown. Run "wsgate -help" for the flags; docs/server.md
// describes them all, and the config file.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	if o.printConfig {
		if err := printConfig(o, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		return
	}
	log := newLogger(o, os.Stderr)
	if o.configFile != "" {
		log.Info("config file read", "file", o.configFile)
	}

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

// printConfig writes the effective configuration to w in the config file's
// format (YAML without a file), secrets masked.
func printConfig(o options, w io.Writer) error {
	fc, err := effectiveFileConfig(o)
	if err != nil {
		return err
	}
	format := "yaml"
	if o.configFile != "" {
		if format, err = fileFormat(o.configFile); err != nil {
			return err
		}
	}
	out, err := encodeConfig(fc, format)
	if err != nil {
		return fmt.Errorf("print config: %w", err)
	}
	_, err = w.Write(out)
	return err
}
