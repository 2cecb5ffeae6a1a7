package wsgate_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"

	"github.com/wsgate/wsgate"
)

// The tutorial's echo handler, written with wsgate's blocking API. Unlike
// the tutorial, the echo keeps each message's type, and the loop ends
// cleanly when the peer closes.
func ExampleUpgrade() {
	handler := func(w http.ResponseWriter, r *http.Request) {
		conn, err := wsgate.Upgrade(w, r, nil) // answers bad requests itself
		if err != nil {
			return
		}
		defer conn.Close()
		for {
			typ, data, err := conn.Read(r.Context())
			if err != nil {
				return
			}
			if err := conn.Write(r.Context(), typ, data); err != nil {
				return
			}
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(handler))
	defer srv.Close()

	c, err := wsgate.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		log.Fatal(err)
	}
	c.WriteMessage([]byte("Hello world!"))
	reply, _ := c.ReadMessage()
	fmt.Println(string(reply))
	c.Close()
	<-c.Done()
	// Output: Hello world!
}

// An event-driven echo server: no goroutine per connection. OnMessage runs
// on wsgate's event loop and must not block; data is only valid during the
// call, and Write copies it.
func ExampleOptions_onMessage() {
	echo := &wsgate.Options{
		OnMessage: func(c *wsgate.Conn, typ wsgate.MessageType, data []byte) {
			c.Write(context.Background(), typ, data)
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wsgate.Upgrade(w, r, echo) // the handler returns; the Conn lives on
	}))
	defer srv.Close()

	c, err := wsgate.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		log.Fatal(err)
	}
	c.Write(context.Background(), wsgate.BinaryMessage, []byte{1, 2, 3})
	typ, data, _ := c.Read(context.Background())
	fmt.Println(typ, data)
	c.Close()
	<-c.Done()
	// Output: binary [1 2 3]
}

// Why did a connection end? Err returns a *CloseError; CloseStatus gives
// just the code.
func ExampleCloseStatus() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := wsgate.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c.CloseWithStatus(wsgate.StatusGoingAway, "restarting")
	}))
	defer srv.Close()

	c, err := wsgate.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		log.Fatal(err)
	}
	_, _, err = c.Read(context.Background())
	fmt.Println(errors.Is(err, wsgate.ErrClosed), wsgate.CloseStatus(err))
	var ce *wsgate.CloseError
	if errors.As(err, &ce) {
		fmt.Printf("%q from peer: %v\n", ce.Reason, ce.Remote)
	}
	// Output:
	// true 1001 (going away)
	// "restarting" from peer: true
}

// A broadcast encodes its message once: every connection writes the same
// frame bytes (and, for those that negotiated compression, the same
// compressed frame).
func ExampleNewPreparedMessage() {
	var (
		mu    sync.Mutex
		conns []*wsgate.Conn
		ready = make(chan struct{}, 3)
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := wsgate.Upgrade(w, r, &wsgate.Options{OnMessage: func(*wsgate.Conn, wsgate.MessageType, []byte) {}})
		if err != nil {
			return
		}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		ready <- struct{}{}
	}))
	defer srv.Close()
	var clients []*wsgate.Conn
	for range 3 {
		c, err := wsgate.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
		if err != nil {
			log.Fatal(err)
		}
		<-ready
		clients = append(clients, c)
	}

	pm, _ := wsgate.NewPreparedMessage(wsgate.TextMessage, []byte(`{"news":"encoded once"}`))
	mu.Lock()
	for _, c := range conns {
		c.WritePrepared(context.Background(), pm)
	}
	mu.Unlock()
	for _, c := range clients {
		msg, _ := c.ReadMessage()
		fmt.Println(string(msg))
		c.Close()
		<-c.Done()
	}
	// Output:
	// {"news":"encoded once"}
	// {"news":"encoded once"}
	// {"news":"encoded once"}
}

// OnOpen runs before any message is delivered, so per-connection state set
// there with SetValue is always in place for OnMessage.
func ExampleOptions_onOpen() {
	opts := &wsgate.Options{
		OnOpen: func(c *wsgate.Conn) { c.SetValue(&session{user: "ada"}) },
		OnMessage: func(c *wsgate.Conn, typ wsgate.MessageType, data []byte) {
			s := c.Value().(*session)
			s.seen++
			c.Write(context.Background(), wsgate.TextMessage, fmt.Appendf(nil, "%s #%d: %s", s.user, s.seen, data))
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wsgate.Upgrade(w, r, opts)
	}))
	defer srv.Close()
	c, err := wsgate.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range []string{"hi", "again"} {
		c.WriteMessage([]byte(m))
		reply, _ := c.ReadMessage()
		fmt.Println(string(reply))
	}
	c.Close()
	<-c.Done()
	// Output:
	// ada #1: hi
	// ada #2: again
}

type session struct {
	user string
	seen int
}

// A large message is streamed in fragments instead of being built whole.
func ExampleConn_Writer() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := wsgate.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		w2, _ := c.Writer(r.Context(), wsgate.TextMessage)
		for i := range 100_000 {
			fmt.Fprintf(w2, "%d,", i)
		}
		w2.Close()
		c.Close()
	}))
	defer srv.Close()
	c, err := wsgate.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), &wsgate.Options{ReadLimit: 1 << 20})
	if err != nil {
		log.Fatal(err)
	}
	msg, _ := c.ReadMessage()
	fmt.Println(len(msg), strings.HasSuffix(string(msg), ",99999,"))
	<-c.Done()
	// Output: 588890 true
}

// One Budget shared by every connection of a server bounds the memory they
// hold together; the heaviest are closed when it runs out.
func ExampleBudget() {
	budget := wsgate.NewBudget(256 << 20)
	opts := &wsgate.Options{
		Budget:    budget,
		ReadLimit: 64 << 10,
		OnMessage: func(c *wsgate.Conn, typ wsgate.MessageType, data []byte) {
			c.Write(context.Background(), typ, data)
		},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		wsgate.Upgrade(w, r, opts)
	})
	fmt.Println(budget.Limit()>>20, "MiB shared")
	// Output: 256 MiB shared
}
