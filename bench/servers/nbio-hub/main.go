// Command nbio-hub is a pub/sub baseline on lesismal/nbio's nbhttp engine
// in non-blocking (epoll) mode, handlers run inline on the poller
// goroutines: a publication is written to every subscriber with
// Conn.WriteMessage, which writes to the socket at once and buffers what
// the kernel does not take (without limit: nobody is dropped). It speaks
// the subset of Centrifugo's client protocol described in
// bench/internal/pubsub on /connection/websocket and POST /api/publish,
// one frame per message.
package main

import (
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"

	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"
	"github.com/wsgate/wsgate/bench/internal/pubsub"
)

// hub holds the channels; broadcasts hold the read lock while they write.
type hub struct {
	mu       sync.RWMutex
	channels map[string]map[*websocket.Conn]struct{}
	joined   map[*websocket.Conn][]string
}

func (h *hub) subscribe(c *websocket.Conn, channel string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	subs := h.channels[channel]
	if subs == nil {
		subs = map[*websocket.Conn]struct{}{}
		h.channels[channel] = subs
	}
	subs[c] = struct{}{}
	h.joined[c] = append(h.joined[c], channel)
}

func (h *hub) leave(c *websocket.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ch := range h.joined[c] {
		delete(h.channels[ch], c)
		if len(h.channels[ch]) == 0 {
			delete(h.channels, ch)
		}
	}
	delete(h.joined, c)
}

func (h *hub) publish(channel string, push []byte) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.channels[channel] {
		_ = c.WriteMessage(websocket.TextMessage, push)
	}
}

type session struct {
	h *hub
	c *websocket.Conn
}

func (s session) Reply(frame []byte)                  { _ = s.c.WriteMessage(websocket.TextMessage, frame) }
func (s session) Subscribe(channel string)            { s.h.subscribe(s.c, channel) }
func (s session) Publish(channel string, push []byte) { s.h.publish(channel, push) }

func main() {
	addr := flag.String("addr", "127.0.0.1:9023", "listen address")
	apiKey := flag.String("api-key", "", "API key required by /api/publish (empty: none)")
	flag.Parse()

	h := &hub{channels: map[string]map[*websocket.Conn]struct{}{}, joined: map[*websocket.Conn][]string{}}
	up := websocket.NewUpgrader()
	up.CheckOrigin = func(*http.Request) bool { return true }
	up.KeepaliveTime = 0 // no read deadline: idle subscribers stay open
	up.OnMessage(func(c *websocket.Conn, _ websocket.MessageType, data []byte) {
		if err := pubsub.HandleFrame(data, session{h, c}); err != nil {
			c.WriteClose(3501, "bad request")
			c.Close()
		}
	})
	up.OnClose(func(c *websocket.Conn, _ error) { h.leave(c) })
	mux := http.NewServeMux()
	mux.HandleFunc("/connection/websocket", func(w http.ResponseWriter, r *http.Request) {
		if _, err := up.Upgrade(w, r, nil); err != nil {
			return
		}
	})
	mux.Handle("/api/publish", pubsub.APIHandler(*apiKey, h.publish))
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
	log.Printf("nbio-hub: pub/sub on ws://%s/connection/websocket", *addr)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	engine.Stop()
}
