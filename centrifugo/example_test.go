package centrifugo_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/centrifugo"
	"github.com/wsgate/wsgate/hub"
)

// Serve Centrifugo's client protocol and server API on one hub; a client
// (here a bare WebSocket speaking the JSON protocol) connects, subscribes,
// and receives what the backend publishes through the API.
func ExampleNewHandler() {
	ctx := context.Background()
	h, err := hub.New(ctx, hub.Config{
		AllowAnonymous: true,
		Channels: hub.ChannelConfig{
			Default: hub.ChannelOptions{AllowSubscribeForClient: true, AllowSubscribeForAnonymous: true},
		},
	})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/connection/websocket", centrifugo.NewHandler(centrifugo.Config{Hub: h}))
	mux.Handle("/api/", centrifugo.NewAPIHandler(h, centrifugo.APIConfig{Key: "secret-key"}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer h.Shutdown(ctx)

	frames := make(chan string, 10)
	conn, err := wsgate.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/connection/websocket", &wsgate.Options{
		OnMessage: func(_ *wsgate.Conn, _ wsgate.MessageType, data []byte) { frames <- string(data) },
	})
	if err != nil {
		panic(err)
	}
	defer conn.CloseNow()
	conn.WriteMessage([]byte(`{"id":1,"connect":{}}` + "\n" + `{"id":2,"subscribe":{"channel":"news"}}`))
	for range 2 {
		<-frames // the connect and subscribe replies
	}

	req, _ := http.NewRequest("POST", srv.URL+"/api/publish", strings.NewReader(`{"channel":"news","data":{"text":"hello"}}`))
	req.Header.Set("X-API-Key", "secret-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println(<-frames)
	// Output:
	// {"push":{"channel":"news","pub":{"data":{"text":"hello"}}}}
}
