package hub_test

import (
	"context"
	"fmt"
	"time"

	"github.com/wsgate/wsgate/hub"
)

// A hub with a namespace that keeps history: publications get offsets in
// the channel's stream, and the stream can be read back (this is what
// recovery uses).
func ExampleHub() {
	ctx := context.Background()
	h, err := hub.New(ctx, hub.Config{
		Channels: hub.ChannelConfig{
			Default: hub.ChannelOptions{AllowSubscribeForClient: true},
			Namespaces: []hub.Namespace{{
				Name: "news",
				ChannelOptions: hub.ChannelOptions{
					AllowSubscribeForClient: true,
					HistorySize:             10,
					HistoryTTL:              time.Minute,
					ForceRecovery:           true,
				},
			}},
		},
	})
	if err != nil {
		panic(err)
	}
	defer h.Shutdown(ctx)

	for _, text := range []string{`"first"`, `"second"`} {
		sp, err := h.Publish(ctx, "news:sport", []byte(text), hub.PublishOptions{})
		if err != nil {
			panic(err)
		}
		fmt.Println("published at offset", sp.Offset)
	}
	hr, err := h.History(ctx, "news:sport", hub.HistoryRequest{Limit: -1})
	if err != nil {
		panic(err)
	}
	for _, pub := range hr.Publications {
		fmt.Println(pub.Offset, string(pub.Data))
	}
	_, err = h.Publish(ctx, "weather:today", []byte(`1`), hub.PublishOptions{})
	fmt.Println(err)
	// Output:
	// published at offset 1
	// published at offset 2
	// 1 "first"
	// 2 "second"
	// hub: error 102: unknown channel
}
