// Command gorilla is a baseline: gorilla/websocket with one goroutine per
// connection running a plain read-then-write echo loop; -compress turns on
// its permessage-deflate (always without context takeover).
package main

import (
	"flag"
	"log"
	"net/http"

	"github.com/gorilla/websocket"
)

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func serveWS(w http.ResponseWriter, r *http.Request) {
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	for {
		typ, data, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(typ, data); err != nil {
			return
		}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9002", "listen address")
	certFile := flag.String("tls-cert", "", "serve TLS (wss://) with this PEM certificate file, with -tls-key")
	keyFile := flag.String("tls-key", "", "PEM key file of -tls-cert")
	flag.BoolVar(&upgrader.EnableCompression, "compress", false, "negotiate permessage-deflate")
	flag.Parse()
	http.HandleFunc("/ws", serveWS)
	log.Printf("gorilla: echo on ws://%s/ws", *addr)
	if *certFile != "" {
		log.Fatal(http.ListenAndServeTLS(*addr, *certFile, *keyFile, nil))
	}
	log.Fatal(http.ListenAndServe(*addr, nil))
}
