// Command nbio is a baseline: lesismal/nbio's nbhttp engine in non-blocking
// (epoll) mode, with the WebSocket message handler run inline on the poller
// goroutine instead of a task pool.
package main

import (
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9004", "listen address")
	flag.Parse()

	up := websocket.NewUpgrader()
	up.CheckOrigin = func(*http.Request) bool { return true }
	up.KeepaliveTime = 0 // no read deadline: idle connections stay open
	up.OnMessage(func(c *websocket.Conn, typ websocket.MessageType, data []byte) {
		_ = c.WriteMessage(typ, data)
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		if _, err := up.Upgrade(w, r, nil); err != nil {
			return
		}
	})
	engine := nbhttp.NewEngine(nbhttp.Config{
		Network:                 "tcp",
		Addrs:                   []string{*addr},
		Handler:                 mux,
		IOMod:                   nbhttp.IOModNonBlocking,
		NPoller:                 runtime.GOMAXPROCS(0),
		ReleaseWebsocketPayload: true,
		SupportServerOnly:       true,
		// Run request and message handlers inline on the poller goroutine.
		ServerExecutor: func(f func()) { f() },
	})
	if err := engine.Start(); err != nil {
		log.Fatal(err)
	}
	log.Printf("nbio: echo on ws://%s/ws", *addr)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	engine.Stop()
}
