package natsbroker_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/broker/natsbroker"
)

// printer is an EventHandler that prints publications.
type printer struct{ done chan struct{} }

func (p printer) HandlePublication(ch string, pub *broker.Publication, sp broker.StreamPosition) {
	fmt.Printf("%s: offset %d: %s\n", ch, pub.Offset, pub.Data)
	if pub.Offset == 2 {
		close(p.done)
	}
}
func (printer) HandleJoin(string, *broker.ClientInfo)  {}
func (printer) HandleLeave(string, *broker.ClientInfo) {}
func (printer) HandleGap([]string)                     {}

// A single node with its own NATS server inside the process: no port, no
// other program. Give each node a ClusterAddr and Routes to form a
// cluster.
func Example_embedded() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "wsgate-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	nats, err := natsbroker.StartEmbedded(ctx, natsbroker.EmbeddedOptions{StoreDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer nats.Shutdown(ctx)

	b, err := natsbroker.New(natsbroker.Options{InProcess: nats})
	if err != nil {
		log.Fatal(err)
	}
	h := printer{done: make(chan struct{})}
	if err := b.Run(ctx, h); err != nil {
		log.Fatal(err)
	}
	defer b.Close(ctx)

	if err := b.Subscribe(ctx, "news"); err != nil {
		log.Fatal(err)
	}
	opts := broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute}
	for _, msg := range []string{`"hello"`, `"world"`} {
		if _, err := b.Publish(ctx, "news", []byte(msg), opts); err != nil {
			log.Fatal(err)
		}
	}
	<-h.done
	pubs, pos, err := b.History(ctx, "news", broker.HistoryOptions{Limit: -1})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("history: %d publications, last offset %d\n", len(pubs), pos.Offset)
	// Output:
	// news: offset 1: "hello"
	// news: offset 2: "world"
	// history: 2 publications, last offset 2
}

// Nodes of a cluster connect to an existing NATS cluster with the options
// NATS users know; streams are replicated on three servers.
func ExampleNew() {
	b, err := natsbroker.New(natsbroker.Options{
		URLs:            "nats://n1:4222,nats://n2:4222,nats://n3:4222",
		Name:            "wsgate-node-1",
		CredentialsFile: "/etc/wsgate/nats.creds",
		TLSCAFile:       "/etc/wsgate/nats-ca.pem",
		Replicas:        3,
	})
	if err != nil {
		log.Fatal(err)
	}
	_ = b // b.Run(ctx, hub) connects.
}
