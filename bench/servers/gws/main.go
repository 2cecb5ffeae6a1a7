// Command gws is a baseline: lxzan/gws set up as its README recommends
// (an Upgrader in a net/http handler, one ReadLoop goroutine per
// connection), with parallel message handling off and compression off
// unless -compress is given (then gws's defaults: permessage-deflate
// without context takeover on either side).
package main

import (
	"flag"
	"log"
	"net/http"

	"github.com/lxzan/gws"
)

// echo answers each message with a copy of the same type.
type echo struct {
	gws.BuiltinEventHandler
}

func (echo) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	_ = c.WriteMessage(m.Opcode, m.Bytes())
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9003", "listen address")
	certFile := flag.String("tls-cert", "", "serve TLS (wss://) with this PEM certificate file, with -tls-key")
	keyFile := flag.String("tls-key", "", "PEM key file of -tls-cert")
	compress := flag.Bool("compress", false, "negotiate permessage-deflate with gws's default settings")
	flag.Parse()
	opt := &gws.ServerOption{
		ParallelEnabled: false,
		Recovery:        gws.Recovery,
	}
	opt.PermessageDeflate.Enabled = *compress
	up := gws.NewUpgrader(echo{}, opt)
	http.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r)
		if err != nil {
			return
		}
		go c.ReadLoop()
	})
	log.Printf("gws: echo on ws://%s/ws", *addr)
	if *certFile != "" {
		log.Fatal(http.ListenAndServeTLS(*addr, *certFile, *keyFile, nil))
	}
	log.Fatal(http.ListenAndServe(*addr, nil))
}
