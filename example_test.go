package wsgate_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

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
