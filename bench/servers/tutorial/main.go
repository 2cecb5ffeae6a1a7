// Command tutorial is the tutorial's design as a baseline: gorilla/websocket
// with a read goroutine and a write goroutine per connection, joined to the
// handler by channels of 1,000 messages, and (with -heartbeat) the
// tutorial's heartbeat goroutine per connection; it echoes preserving the
// message type. The matrix runs it with the heartbeat off, like wsgate.
package main

import (
	"errors"
	"flag"
	"log"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

type message struct {
	typ  int
	data []byte
}

// connection wraps a gorilla connection the way the tutorial does: reads
// and writes go through buffered channels served by two goroutines.
type connection struct {
	ws       *websocket.Conn
	in       chan message
	out      chan message
	done     chan struct{}
	stopOnce sync.Once
}

var errClosed = errors.New("connection is closed")

func newConnection(ws *websocket.Conn) *connection {
	c := &connection{
		ws:   ws,
		in:   make(chan message, 1000),
		out:  make(chan message, 1000),
		done: make(chan struct{}),
	}
	go c.readLoop()
	go c.writeLoop()
	return c
}

func (c *connection) read() (message, error) {
	select {
	case m := <-c.in:
		return m, nil
	case <-c.done:
		return message{}, errClosed
	}
}

func (c *connection) write(m message) error {
	select {
	case c.out <- m:
		return nil
	case <-c.done:
		return errClosed
	}
}

// close may be called by any goroutine, any number of times.
func (c *connection) close() {
	c.ws.Close()
	c.stopOnce.Do(func() { close(c.done) })
}

func (c *connection) readLoop() {
	defer c.close()
	for {
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		select {
		case c.in <- message{typ, data}:
		case <-c.done:
			return
		}
	}
}

func (c *connection) writeLoop() {
	defer c.close()
	for {
		select {
		case m := <-c.out:
			if err := c.ws.WriteMessage(m.typ, m.data); err != nil {
				return
			}
		case <-c.done:
			return
		}
	}
}

var heartbeat = flag.Duration("heartbeat", 0, "send the text message \"heartbeat\" this often from a goroutine per connection, as the tutorial does; 0 disables")

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func serveWS(w http.ResponseWriter, r *http.Request) {
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := newConnection(ws)
	defer c.close()
	if *heartbeat > 0 {
		go func() {
			t := time.NewTicker(*heartbeat)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					if c.write(message{websocket.TextMessage, []byte("heartbeat")}) != nil {
						return
					}
				case <-c.done:
					return
				}
			}
		}()
	}
	for {
		m, err := c.read()
		if err != nil {
			return
		}
		if err := c.write(m); err != nil {
			return
		}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9001", "listen address")
	flag.Parse()
	http.HandleFunc("/ws", serveWS)
	log.Printf("tutorial: echo on ws://%s/ws", *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
