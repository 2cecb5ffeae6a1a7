//go:build linux

// Command tcpecho is a plain TCP echo on one epoll loop: the ceiling for the
// load generator's raw mode (wsgate-bench echo -raw), which sends pre-built
// WebSocket frames and expects the same bytes back.
package main

import (
	"flag"
	"log"

	"github.com/wsgate/wsgate/bench/internal/eloop"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9006", "listen address (IPv4 host:port)")
	flag.Parse()
	srv, err := eloop.Listen(*addr, func(c *eloop.Conn, in []byte) int {
		c.Send(in)
		return len(in)
	})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("tcpecho: echo on %s", *addr)
	log.Fatal(srv.Run())
}
