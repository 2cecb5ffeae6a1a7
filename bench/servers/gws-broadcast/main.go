// Command gws-broadcast is a pub/sub baseline on lxzan/gws: connections
// set up as gws's README recommends (an Upgrader in a net/http handler, one
// ReadLoop goroutine each, parallel handling and compression off), and each
// publication sent with a gws.Broadcaster, which frames the message once
// and queues it on every subscriber's asynchronous write queue (unbounded:
// nobody is dropped). It speaks the subset of Centrifugo's client protocol
// described in bench/internal/pubsub on /connection/websocket and
// POST /api/publish, one frame per message.
package main

import (
	"flag"
	"log"
	"net/http"
	"sync"

	"github.com/lxzan/gws"
	"github.com/wsgate/wsgate/bench/internal/pubsub"
)

// hub holds the channels. Broadcasts hold the read lock while they queue
// (gws writes on each connection's own goroutine, never here).
type hub struct {
	mu       sync.RWMutex
	channels map[string]map[*gws.Conn]struct{}
	joined   map[*gws.Conn][]string
}

func (h *hub) subscribe(c *gws.Conn, channel string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	subs := h.channels[channel]
	if subs == nil {
		subs = map[*gws.Conn]struct{}{}
		h.channels[channel] = subs
	}
	subs[c] = struct{}{}
	h.joined[c] = append(h.joined[c], channel)
}

func (h *hub) leave(c *gws.Conn) {
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
	b := gws.NewBroadcaster(gws.OpcodeText, push)
	defer b.Close()
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.channels[channel] {
		_ = b.Broadcast(c)
	}
}

// handler is gws's event handler: commands arrive on the connection's
// ReadLoop goroutine.
type handler struct {
	gws.BuiltinEventHandler
	hub *hub
}

type session struct {
	h *hub
	c *gws.Conn
}

func (s session) Reply(frame []byte)                  { _ = s.c.WriteMessage(gws.OpcodeText, frame) }
func (s session) Subscribe(channel string)            { s.h.subscribe(s.c, channel) }
func (s session) Publish(channel string, push []byte) { s.h.publish(channel, push) }

func (h handler) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	if err := pubsub.HandleFrame(m.Bytes(), session{h.hub, c}); err != nil {
		c.WriteClose(3501, []byte("bad request"))
	}
}

func (h handler) OnClose(c *gws.Conn, _ error) { h.hub.leave(c) }

func main() {
	addr := flag.String("addr", "127.0.0.1:9022", "listen address")
	apiKey := flag.String("api-key", "", "API key required by /api/publish (empty: none)")
	flag.Parse()
	h := &hub{channels: map[string]map[*gws.Conn]struct{}{}, joined: map[*gws.Conn][]string{}}
	up := gws.NewUpgrader(handler{hub: h}, &gws.ServerOption{
		ParallelEnabled: false,
		Recovery:        gws.Recovery,
	})
	http.HandleFunc("/connection/websocket", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r)
		if err != nil {
			return
		}
		go c.ReadLoop()
	})
	http.Handle("/api/publish", pubsub.APIHandler(*apiKey, h.publish))
	log.Printf("gws-broadcast: pub/sub on ws://%s/connection/websocket", *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
