package server

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/wsgate/wsgate/broker/natsbroker"
)

// The cluster tests run three wsgate nodes (Servers on 127.0.0.1 ports) on
// real NATS servers with JetStream, in process: one server, and a cluster
// of three. They are slower than the others (NATS starts, JetStream elects
// leaders), so each one runs in parallel with the rest of the package.

// TestClusterDelivery: clients on three nodes subscribe to one channel;
// publications sent through every node's API and by clients on every node,
// at once, reach every client exactly once and in offset order; presence
// and history agree on every node; a client that leaves one node and
// comes back on another recovers exactly what it missed.
func TestClusterDelivery(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		nats   func(t testing.TB) []*natsServer
		spread bool // each node on its own NATS server
	}{
		{"one NATS server", func(t testing.TB) []*natsServer { return []*natsServer{startNATS(t)} }, false},
		{"three NATS servers", startNATSCluster, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			servers := tt.nats(t)
			cfgs := make([]Config, 3)
			for i := range cfgs {
				urls := natsURLs(servers...)
				if tt.spread {
					urls = servers[i].url()
				}
				cfgs[i] = clusterConfig(urls)
				cfgs[i].Cluster.NATS.Replicas = len(servers)
			}
			nodes := startNodes(t, cfgs...)
			dumpLogsOnFailure(t, nodes...)
			testClusterDelivery(t, nodes)
		})
	}
}

func testClusterDelivery(t *testing.T, nodes []*testServer) {
	var clients []*streamClient
	for i, n := range nodes {
		for j := range 2 {
			c := dialStream(t, n, fmt.Sprintf("node%d/client%d", i, j))
			c.subscribe(t, nil)
			clients = append(clients, c)
		}
	}

	// Every node's API and one client per node publish at once.
	const perPublisher = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := make(map[uint64]int) // offset → n
	var errs []error
	for i, n := range nodes {
		wg.Go(func() {
			for k := range perPublisher {
				v := 1000*(i+1) + k
				res, err := apiPublish(n.api(), v, "")
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else if _, dup := acked[res.Offset]; dup {
					errs = append(errs, fmt.Errorf("offset %d acknowledged twice", res.Offset))
				} else {
					acked[res.Offset] = v
				}
				mu.Unlock()
			}
		})
		wg.Go(func() {
			for k := range perPublisher {
				if err := clients[2*i].publish(100*(i+1) + k); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	total := uint64(2 * perPublisher * len(nodes))
	if t.Failed() {
		t.FailNow()
	}
	for _, c := range clients {
		c.waitOffset(t, total)
	}
	var first []*protocol.Publication
	for _, c := range clients {
		pubs, unsubs := c.received()
		if len(unsubs) > 0 {
			t.Errorf("%s: unsubscribed with %v, want every publication", c.name, unsubs)
		}
		checkStream(t, c.name, pubs, total)
		if first == nil {
			first = pubs
			continue
		}
		for i, p := range pubs {
			if i < len(first) && string(p.Data) != string(first[i].Data) {
				t.Errorf("%s: offset %d is %s, %s elsewhere", c.name, p.Offset, p.Data, first[i].Data)
				break
			}
		}
	}
	for off, v := range acked {
		if off == 0 || off > total || dataN(first[off-1].Data) != v {
			t.Errorf("the API acknowledged {n:%d} at offset %d, delivered: %v", v, off, offsets(first))
		}
	}

	// Presence and history agree on every node.
	var presence map[string]any
	mustAPI(t, nodes[0].api(), "presence", map[string]any{"channel": clusterChannel}, &struct {
		Presence *map[string]any `json:"presence"`
	}{&presence})
	want := slices.Sorted(maps.Keys(presence))
	if len(want) != len(clients) {
		t.Errorf("presence on node 0: %d clients, want %d", len(want), len(clients))
	}
	h0 := history(t, nodes[0])
	for i, n := range nodes {
		var stats struct {
			NumClients int `json:"num_clients"`
		}
		mustAPI(t, n.api(), "presence_stats", map[string]any{"channel": clusterChannel}, &stats)
		if stats.NumClients != len(clients) {
			t.Errorf("presence_stats on node %d: %d clients, want %d", i, stats.NumClients, len(clients))
		}
		var p map[string]any
		mustAPI(t, n.api(), "presence", map[string]any{"channel": clusterChannel}, &struct {
			Presence *map[string]any `json:"presence"`
		}{&p})
		if got := slices.Sorted(maps.Keys(p)); !slices.Equal(got, want) {
			t.Errorf("presence on node %d: %v, node 0: %v", i, got, want)
		}
		h := history(t, n)
		if h.Offset != total || h.Epoch != h0.Epoch || len(h.Publications) != int(total) {
			t.Errorf("history on node %d: offset %d epoch %q, %d publications; want %d, %q, %d", i, h.Offset, h.Epoch, len(h.Publications), total, h0.Epoch, total)
			continue
		}
		for k, p := range h.Publications {
			if p.Offset != uint64(k+1) || string(p.Data) != string(first[k].Data) {
				t.Errorf("history on node %d: publication %d is %s at %d, delivered %s", i, k, p.Data, p.Offset, first[k].Data)
				break
			}
		}
	}

	// Every node's info lists the three nodes (each announces itself every
	// 3s), each with its own clients: two per node, on the channel.
	for i, n := range nodes {
		waitFor(t, fmt.Sprintf("node %d's info to list the three nodes", i), func() bool {
			var info struct {
				Nodes []struct {
					UID        string `json:"uid"`
					NumClients int    `json:"num_clients"`
					NumSubs    int    `json:"num_subs"`
				} `json:"nodes"`
			}
			if err := tryAPI(n.api(), "info", map[string]any{}, &info); err != nil || len(info.Nodes) != len(nodes) {
				return false
			}
			uids := map[string]bool{}
			for _, node := range info.Nodes {
				uids[node.UID] = true
				if node.NumClients != 2 || node.NumSubs != 2 {
					return false
				}
			}
			return len(uids) == len(nodes)
		})
	}

	// A client leaves node 0, misses five publications, and comes back on
	// node 2: it recovers exactly those, then receives live ones.
	moved := clients[0]
	since := &protocol.StreamPosition{Offset: moved.last(), Epoch: h0.Epoch}
	moved.c.CloseNow()
	<-moved.done
	for k := range 5 {
		retryPublish(t, nodes[1], 5000+k)
	}
	back := dialStream(t, nodes[2], "moved")
	res := back.subscribe(t, since)
	if !res.Recovered || !res.WasRecovering || len(res.Publications) != 5 || res.Epoch != h0.Epoch {
		t.Fatalf("recovery on another node: recovered %v, %d publications, epoch %q (want %q): %v", res.Recovered, len(res.Publications), res.Epoch, h0.Epoch, offsets(res.Publications))
	}
	for k, p := range res.Publications {
		if p.Offset != total+uint64(k+1) || dataN(p.Data) != 5000+k {
			t.Errorf("recovered publication %d: offset %d data %s", k, p.Offset, p.Data)
		}
	}
	retryPublish(t, nodes[0], 6000)
	back.waitOffset(t, total+6)
	if pubs, _ := back.received(); len(pubs) != 6 || pubs[5].Offset != total+6 || dataN(pubs[5].Data) != 6000 {
		t.Errorf("after recovery: %v", offsets(pubs))
	}
}

// TestClusterNATSRestart: the one NATS server of three nodes stops. Every
// node's /readyz answers 503 and publishing fails (nothing is
// acknowledged that is not stored); the nodes keep their clients. When NATS
// is back, on the same port and store, /readyz answers 200 again and
// publications flow again with contiguous offsets: every client has every
// publication once, in order, or was told with an unsubscribe push and
// recovers the rest.
func TestClusterNATSRestart(t *testing.T) {
	t.Parallel()
	n := startNATS(t)
	nodes := startNodes(t, clusterConfig(n.url()), clusterConfig(n.url()), clusterConfig(n.url()))
	dumpLogsOnFailure(t, nodes...)
	var clients []*streamClient
	for i, node := range nodes {
		c := dialStream(t, node, fmt.Sprintf("node%d", i))
		c.subscribe(t, nil)
		clients = append(clients, c)
	}
	for k := 1; k <= 3; k++ {
		retryPublish(t, nodes[k%3], k)
	}
	for _, c := range clients {
		c.waitOffset(t, 3)
	}

	n.stop(t)
	for _, node := range nodes {
		waitReady(t, node, 503)
	}
	if res, err := apiPublish(nodes[0].api(), 99, ""); err == nil {
		t.Errorf("publish without NATS acknowledged at %+v", res)
	}
	n.start(t)
	for _, node := range nodes {
		waitReady(t, node, 200)
	}
	for k := 4; k <= 6; k++ {
		if res := retryPublish(t, nodes[k%3], k); res.Offset != uint64(k) {
			t.Errorf("publication %d at offset %d after the restart: offsets must stay contiguous", k, res.Offset)
		}
	}
	for _, c := range clients {
		c.waitOffset(t, 6)
		completeStream(t, c, 6)
	}
}

// completeStream checks that c received offsets 1..n once each and in
// order; when it was told it lost publications (an unsubscribe push,
// insufficient state), it resubscribes from its last offset, as an SDK
// does, and must recover exactly the rest. Silence about a gap fails.
func completeStream(t *testing.T, c *streamClient, n uint64) {
	t.Helper()
	pubs, unsubs := c.received()
	if len(unsubs) > 0 {
		h := c.subscribe(t, &protocol.StreamPosition{Offset: c.last(), Epoch: epochOf(t, c)})
		if !h.Recovered {
			t.Errorf("%s: told it lost publications, but could not recover: %+v", c.name, h)
		}
		c.waitOffset(t, n)
		pubs, _ = c.received()
	}
	checkStream(t, c.name, pubs, n)
}

// epochOf returns the stream epoch a client's subscription had.
func epochOf(t *testing.T, c *streamClient) string {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch
}

// TestClusterNodeKill: a node dies (its connections cut off, clients and
// API requests alike) while publications stream through its API. None of
// the publications it acknowledged is lost: the clients of the other nodes
// receive every one, once and in order, history holds them, and its own
// client, reconnected to another node, recovers exactly what it missed.
func TestClusterNodeKill(t *testing.T) {
	t.Parallel()
	servers := startNATSCluster(t)
	urls := natsURLs(servers...)
	nodes := startNodes(t, clusterConfig(urls), clusterConfig(urls), clusterConfig(urls))
	dumpLogsOnFailure(t, nodes...)
	victim := dialStream(t, nodes[0], "on the killed node")
	victim.subscribe(t, nil)
	var others []*streamClient
	for i, node := range nodes[1:] {
		c := dialStream(t, node, fmt.Sprintf("node%d", i+1))
		c.subscribe(t, nil)
		others = append(others, c)
	}

	// Two publishers on the doomed node's API, until it is gone.
	var mu sync.Mutex
	acked := make(map[uint64]int)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := range 2 {
		wg.Go(func() {
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				v := 1000*(p+1) + k
				res, err := apiPublish(nodes[0].api(), v, "")
				if err != nil {
					continue // not acknowledged: the node is dying, or dead
				}
				mu.Lock()
				acked[res.Offset] = v
				mu.Unlock()
			}
		})
	}
	deadline := time.Now().Add(clusterWait)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d publications acknowledged within %v", n, clusterWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
	kill(t, nodes[0])
	close(stop)
	wg.Wait()

	// One more through a surviving node marks the end of the stream.
	last := retryPublish(t, nodes[1], 9999).Offset
	if uint64(len(acked)) >= last {
		t.Fatalf("%d publications acknowledged, but the stream ends at %d", len(acked), last)
	}
	for _, c := range others {
		c.waitOffset(t, last)
		completeStream(t, c, last)
		pubs, _ := c.received()
		for off, v := range acked {
			if dataN(pubs[off-1].Data) != v {
				t.Errorf("%s: offset %d is %s, the API acknowledged {n:%d}", c.name, off, pubs[off-1].Data, v)
			}
		}
	}
	h := history(t, nodes[2])
	if h.Offset != last || len(h.Publications) != int(last) {
		t.Errorf("history after the kill: offset %d, %d publications, want %d", h.Offset, len(h.Publications), last)
	}

	// The killed node's client lost its connection without a word; it
	// comes back on node 2 and recovers exactly what it missed.
	select {
	case <-victim.done:
	case <-time.After(clusterWait):
		t.Fatal("the killed node's client is still connected")
	}
	seen, _ := victim.received()
	back := dialStream(t, nodes[2], "back on node 2")
	res := back.subscribe(t, &protocol.StreamPosition{Offset: victim.last(), Epoch: h.Epoch})
	if !res.Recovered {
		t.Fatalf("not recovered after the kill: %+v", res)
	}
	checkStream(t, "the moved client", append(seen, res.Publications...), last)
}

// kill stops a node the hard way: its listeners, HTTP requests in flight
// and WebSocket connections are cut off at once, without close frames.
func kill(t *testing.T, ts *testServer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ts.Shutdown(ctx) // its error says connections were cut off
	ts.cancel()
}

// TestClusterEmbedded: three nodes, each with an embedded NATS server
// routed to the others' and nothing else running, started in any order,
// form a cluster: a publication through one node's API reaches clients on
// the others, presence and history agree, and the startup log names the
// mode.
func TestClusterEmbedded(t *testing.T) {
	t.Parallel()
	routes := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	cfgs := make([]Config, 3)
	for i := range cfgs {
		cfgs[i] = clusterConfig("")
		cfgs[i].Cluster.Embedded = &natsbroker.EmbeddedOptions{
			ClusterAddr: routes[i],
			Routes:      routes,
			StoreDir:    t.TempDir(),
		}
	}
	nodes := startNodes(t, cfgs...)
	dumpLogsOnFailure(t, nodes...)
	for i, n := range nodes {
		rec := n.logs.waitLog(t, "broker", map[string]any{"mode": "nats-embedded"})
		if rec["replicas"] != float64(3) {
			t.Errorf("node %d: replicas %v, want 3 for a cluster of three", i, rec["replicas"])
		}
		waitReady(t, n, 200)
	}
	var clients []*streamClient
	for i, n := range nodes {
		c := dialStream(t, n, fmt.Sprintf("node%d", i))
		c.subscribe(t, nil)
		clients = append(clients, c)
	}
	for k := 1; k <= 6; k++ {
		retryPublish(t, nodes[k%3], k)
	}
	for _, c := range clients {
		c.waitOffset(t, 6)
		completeStream(t, c, 6)
	}
	for i, n := range nodes {
		var stats struct {
			NumClients int `json:"num_clients"`
		}
		mustAPI(t, n.api(), "presence_stats", map[string]any{"channel": clusterChannel}, &stats)
		if stats.NumClients != 3 {
			t.Errorf("presence_stats on node %d: %d, want 3", i, stats.NumClients)
		}
		if h := history(t, n); h.Offset != 6 || len(h.Publications) != 6 {
			t.Errorf("history on node %d: offset %d, %d publications", i, h.Offset, len(h.Publications))
		}
	}
}

// TestClusterNATSServerRestartUnderLoad: one server of a NATS cluster of
// three restarts while publications stream through every node. Nodes
// connected to it reconnect to another server and resubscribe; every
// acknowledged publication stays at its offset, and every client ends up
// with the whole stream once and in order, or is told it lost some and
// recovers them.
func TestClusterNATSServerRestartUnderLoad(t *testing.T) {
	t.Parallel()
	servers := startNATSCluster(t)
	urls := natsURLs(servers...)
	cfgs := make([]Config, 3)
	for i := range cfgs {
		cfgs[i] = clusterConfig(urls)
	}
	nodes := startNodes(t, cfgs...)
	dumpLogsOnFailure(t, nodes...)
	var clients []*streamClient
	for i, node := range nodes {
		c := dialStream(t, node, fmt.Sprintf("node%d", i))
		c.subscribe(t, nil)
		clients = append(clients, c)
	}

	stop := make(chan struct{})
	published := make(chan int, 1)
	var pubErr error
	go func() {
		n := 0
		defer func() { published <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, pubErr = tryRetryPublish(nodes[(n+1)%3], n+1); pubErr != nil {
				return
			}
			n++
		}
	}()
	time.Sleep(300 * time.Millisecond)
	servers[0].stop(t)
	time.Sleep(time.Second)
	servers[0].start(t)
	time.Sleep(time.Second)
	close(stop)
	n := <-published
	if pubErr != nil || n < 10 {
		t.Fatalf("%d publications: %v", n, pubErr)
	}
	told := 0
	defer func() { t.Logf("%d publications; %d clients told they lost some", n, told) }()
	for _, c := range clients {
		c.waitOffset(t, uint64(n))
		if _, unsubs := c.received(); len(unsubs) > 0 {
			told++
		}
		completeStream(t, c, uint64(n))
		pubs, _ := c.received()
		for i, p := range pubs {
			if dataN(p.Data) != i+1 {
				t.Errorf("%s: offset %d is %s, want {n:%d}: a publication was stored twice or lost", c.name, p.Offset, p.Data, i+1)
				break
			}
		}
	}
}
