// Command gorilla-hub is a pub/sub baseline in the style of gorilla's chat
// example: one hub goroutine owns the channels and every client's send
// channel (256 messages); each connection has a read goroutine and a write
// goroutine; a client whose send channel is full is dropped. It speaks the
// subset of Centrifugo's client protocol described in bench/internal/pubsub
// on /connection/websocket and POST /api/publish, one frame per message.
package main

import (
	"flag"
	"log"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wsgate/wsgate/bench/internal/pubsub"
)

const (
	sendBuffer = 256 // gorilla's chat example
	writeWait  = 10 * time.Second
	readLimit  = 1 << 20
)

type client struct {
	conn *websocket.Conn
	send chan []byte
}

type subscription struct {
	c       *client
	channel string
	done    chan struct{}
}

type publication struct {
	channel string
	push    []byte
}

type reply struct {
	c     *client
	frame []byte
}

// hub owns the clients, the channels and the send channels; only run
// touches them.
type hub struct {
	register   chan *client
	unregister chan *client
	subscribe  chan subscription
	publish    chan publication
	reply      chan reply

	clients  map[*client][]string // → its channels
	channels map[string]map[*client]struct{}
}

func newHub() *hub {
	return &hub{
		register:   make(chan *client),
		unregister: make(chan *client),
		subscribe:  make(chan subscription),
		publish:    make(chan publication, 256),
		reply:      make(chan reply, 256),
		clients:    map[*client][]string{},
		channels:   map[string]map[*client]struct{}{},
	}
}

func (h *hub) run() {
	for {
		select {
		case c := <-h.register:
			h.clients[c] = nil
		case c := <-h.unregister:
			h.drop(c)
		case s := <-h.subscribe:
			if chans, ok := h.clients[s.c]; ok {
				h.clients[s.c] = append(chans, s.channel)
				subs := h.channels[s.channel]
				if subs == nil {
					subs = map[*client]struct{}{}
					h.channels[s.channel] = subs
				}
				subs[s.c] = struct{}{}
			}
			close(s.done)
		case r := <-h.reply:
			if _, ok := h.clients[r.c]; ok {
				h.deliver(r.c, r.frame)
			}
		case p := <-h.publish:
			for c := range h.channels[p.channel] {
				h.deliver(c, p.push)
			}
		}
	}
}

// deliver queues a frame for c, or drops c when its send channel is full.
func (h *hub) deliver(c *client, frame []byte) {
	select {
	case c.send <- frame:
	default:
		h.drop(c)
	}
}

// drop forgets c and closes its send channel, which ends its writer.
func (h *hub) drop(c *client) {
	chans, ok := h.clients[c]
	if !ok {
		return
	}
	for _, ch := range chans {
		delete(h.channels[ch], c)
		if len(h.channels[ch]) == 0 {
			delete(h.channels, ch)
		}
	}
	delete(h.clients, c)
	close(c.send)
}

// session is the protocol's view of one client.
type session struct {
	h *hub
	c *client
}

func (s session) Reply(frame []byte) { s.h.reply <- reply{s.c, frame} }

func (s session) Subscribe(channel string) {
	done := make(chan struct{})
	s.h.subscribe <- subscription{s.c, channel, done}
	<-done
}

func (s session) Publish(channel string, push []byte) {
	s.h.publish <- publication{strings.Clone(channel), push}
}

func (c *client) readPump(h *hub) {
	defer func() {
		h.unregister <- c
		c.conn.Close()
	}()
	c.conn.SetReadLimit(readLimit)
	s := session{h, c}
	for {
		_, frame, err := c.conn.ReadMessage()
		if err != nil {
			return
		}
		if err := pubsub.HandleFrame(frame, s); err != nil {
			return
		}
	}
}

func (c *client) writePump() {
	defer c.conn.Close()
	for frame := range c.send {
		c.conn.SetWriteDeadline(time.Now().Add(writeWait))
		if err := c.conn.WriteMessage(websocket.TextMessage, frame); err != nil {
			return
		}
	}
	c.conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func main() {
	addr := flag.String("addr", "127.0.0.1:9021", "listen address")
	apiKey := flag.String("api-key", "", "API key required by /api/publish (empty: none)")
	flag.Parse()
	h := newHub()
	go h.run()
	http.HandleFunc("/connection/websocket", func(w http.ResponseWriter, r *http.Request) {
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := &client{conn: conn, send: make(chan []byte, sendBuffer)}
		h.register <- c
		go c.writePump()
		go c.readPump(h)
	})
	http.Handle("/api/publish", pubsub.APIHandler(*apiKey, func(channel string, push []byte) {
		h.publish <- publication{channel, push}
	}))
	log.Printf("gorilla-hub: pub/sub on ws://%s/connection/websocket", *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
