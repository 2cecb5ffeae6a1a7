package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/broker/natsbroker"
)

// clusterWait bounds the waits of the cluster tests, which include NATS
// reconnections and JetStream leader elections on a loaded machine.
const clusterWait = 30 * time.Second

// clusterChannel is the channel the cluster tests publish to: no namespace,
// so demoConfig's history, presence and client publishing apply.
const clusterChannel = "news"

// freeAddr returns a 127.0.0.1 address whose port was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// natsServer is a real NATS server (nats-server, in process, through
// natsbroker.StartEmbedded) that accepts clients on a 127.0.0.1 port, and
// can be stopped and started again on the same port and store.
type natsServer struct {
	opts natsbroker.EmbeddedOptions
	mu   sync.Mutex
	e    *natsbroker.Embedded
}

// url returns the server's client URL.
func (n *natsServer) url() string { return "nats://" + n.opts.ClientAddr }

func (n *natsServer) start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	e, err := natsbroker.StartEmbedded(ctx, n.opts)
	if err != nil {
		t.Fatalf("starting NATS %s: %v", n.opts.Name, err)
	}
	n.mu.Lock()
	n.e = e
	n.mu.Unlock()
}

// stop shuts the server down; it does nothing when it is not running.
func (n *natsServer) stop(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	e := n.e
	n.e = nil
	n.mu.Unlock()
	if e == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Errorf("stopping NATS %s: %v", n.opts.Name, err)
	}
}

// startNATS starts one NATS server with JetStream until the test ends.
func startNATS(t testing.TB) *natsServer {
	t.Helper()
	n := &natsServer{opts: natsbroker.EmbeddedOptions{Name: "solo", ClientAddr: freeAddr(t), StoreDir: t.TempDir()}}
	n.start(t)
	t.Cleanup(func() { n.stop(t) })
	return n
}

// startNATSCluster starts three NATS servers routed to each other.
func startNATSCluster(t testing.TB) []*natsServer {
	t.Helper()
	routes := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	servers := make([]*natsServer, len(routes))
	for i := range servers {
		servers[i] = &natsServer{opts: natsbroker.EmbeddedOptions{
			Name:        fmt.Sprintf("nats%d", i),
			ClientAddr:  freeAddr(t),
			StoreDir:    t.TempDir(),
			ClusterName: "test",
			ClusterAddr: routes[i],
			Routes:      routes,
		}}
	}
	var wg sync.WaitGroup
	for _, n := range servers {
		wg.Go(func() { n.start(t) })
	}
	wg.Wait()
	for _, n := range servers {
		t.Cleanup(func() { n.stop(t) })
	}
	return servers
}

// natsURLs joins the servers' client URLs.
func natsURLs(servers ...*natsServer) string {
	urls := make([]string, len(servers))
	for i, n := range servers {
		urls[i] = n.url()
	}
	return strings.Join(urls, ",")
}

// clusterConfig is demoConfig on NATS at urls, with quick reconnections
// and presence refreshes, so that the tests are short.
func clusterConfig(urls string) Config {
	cfg := demoConfig()
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Cluster.NATS = natsbroker.Options{
		URLs:                  urls,
		ReconnectWait:         50 * time.Millisecond,
		RequestTimeout:        3 * time.Second,
		PresenceTTL:           3 * time.Second,
		PositionCheckInterval: time.Second,
	}
	return cfg
}

// startNodes starts one wsgate node per config, concurrently (so that
// embedded NATS servers find each other), and returns them in order.
func startNodes(t *testing.T, cfgs ...Config) []*testServer {
	t.Helper()
	nodes := make([]*testServer, len(cfgs))
	var wg sync.WaitGroup
	for i, cfg := range cfgs {
		wg.Go(func() { nodes[i] = startNode(t, cfg) })
	}
	wg.Wait()
	for _, n := range nodes {
		if n == nil {
			t.FailNow()
		}
	}
	return nodes
}

// startNode is startServer that may run on any goroutine (it reports
// with t.Error) and waits for the node to be ready.
func startNode(t *testing.T, cfg Config) *testServer {
	log, logs := newTestLogger()
	s, err := New(cfg, log)
	if err != nil {
		t.Errorf("New: %v", err)
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Errorf("listen: %v", err)
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: s, addr: ln.Addr().String(), logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() { ts.stop(t) })
	deadline := time.Now().Add(clusterWait + 10*time.Second)
	for logs.find(t, "wsgate listening", nil) == nil {
		select {
		case err := <-ts.done:
			ts.done <- err
			t.Errorf("node did not start: %v\n%s", err, logs.buf.String())
			return nil
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Errorf("node not listening after %v", clusterWait)
			return nil
		}
	}
	return ts
}

// api is the node's server API base URL.
func (ts *testServer) api() string { return ts.httpURL() + "/api" }

// httpClient bounds every API call of the cluster tests.
var httpClient = &http.Client{Timeout: 10 * time.Second}

// tryAPI calls an API method and decodes its result into out; it returns
// an error for a failed call or an error answer, and may run on any
// goroutine.
func tryAPI(base, method string, body, out any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequest(http.MethodPost, base+"/"+method, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", testAPIKey)
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var ans struct {
		Error *struct {
			Code    int
			Message string
		} `json:"error"`
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(data, &ans); err != nil {
		return fmt.Errorf("%s: status %d, body %q", method, resp.StatusCode, data)
	}
	if ans.Error != nil {
		return fmt.Errorf("%s: error %d %s", method, ans.Error.Code, ans.Error.Message)
	}
	if out != nil {
		return json.Unmarshal(ans.Result, out)
	}
	return nil
}

// mustAPI is tryAPI that fails the test.
func mustAPI(t *testing.T, base, method string, body, out any) {
	t.Helper()
	if err := tryAPI(base, method, body, out); err != nil {
		t.Fatal(err)
	}
}

type pubResult struct {
	Offset uint64 `json:"offset"`
	Epoch  string `json:"epoch"`
}

// apiPublish publishes {"n": n} to the test channel through a node's API.
func apiPublish(base string, n int, key string) (pubResult, error) {
	var res pubResult
	body := map[string]any{"channel": clusterChannel, "data": map[string]int{"n": n}}
	if key != "" {
		body["idempotency_key"] = key
	}
	err := tryAPI(base, "publish", body, &res)
	return res, err
}

type historyResult struct {
	Publications []struct {
		Data   json.RawMessage `json:"data"`
		Offset uint64          `json:"offset"`
	} `json:"publications"`
	Offset uint64 `json:"offset"`
	Epoch  string `json:"epoch"`
}

// history returns the test channel's whole history through a node's API.
func history(t *testing.T, ts *testServer) historyResult {
	t.Helper()
	var h historyResult
	mustAPI(t, ts.api(), "history", map[string]any{"channel": clusterChannel, "limit": -1}, &h)
	return h
}

// streamClient is a hub client whose reader runs on its own goroutine, so
// that many of them receive at once: it answers pings, keeps the
// publications of the test channel in arrival order (those a subscribe
// recovered first) and the unsubscribe pushes, and hands replies to
// callers. Its methods may be called from any goroutine.
type streamClient struct {
	name string
	c    *wsgate.Conn
	done chan struct{} // closed when the reader has returned

	mu      sync.Mutex
	nextID  uint32
	replies map[uint32]chan *protocol.Reply
	pubs    []*protocol.Publication
	unsubs  []uint32 // codes of unsubscribe pushes since the last subscribe
	epoch   string   // the stream's epoch, from the last subscribe
	ended   error    // why the connection ended
}

// dialStream connects an anonymous client to a node's hub.
func dialStream(t *testing.T, ts *testServer, name string) *streamClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	c, err := wsgate.Dial(ctx, ts.hubURL(), &wsgate.Options{PingInterval: -1})
	if err != nil {
		t.Fatalf("%s: dial %s: %v", name, ts.hubURL(), err)
	}
	sc := &streamClient{name: name, c: c, done: make(chan struct{}), replies: make(map[uint32]chan *protocol.Reply)}
	go sc.read()
	t.Cleanup(func() {
		c.CloseNow()
		select {
		case <-sc.done:
		case <-time.After(waitTimeout):
			t.Errorf("%s: reader did not end", name)
		}
		waitDone(t, c)
	})
	if r, err := sc.call(&protocol.Command{Connect: &protocol.ConnectRequest{}}); err != nil || r.Error != nil {
		t.Fatalf("%s: connect: %v %v", name, r, err)
	}
	return sc
}

func (sc *streamClient) read() {
	defer close(sc.done)
	for {
		_, frame, err := sc.c.Read(context.Background())
		if err != nil {
			sc.mu.Lock()
			sc.ended = err
			sc.mu.Unlock()
			return
		}
		dec := protocol.NewJSONReplyDecoder(frame)
		for {
			r, err := dec.Decode()
			if err != nil {
				break
			}
			sc.handle(r)
		}
	}
}

func (sc *streamClient) handle(r *protocol.Reply) {
	if r.Id == 0 && r.Push == nil && r.Error == nil {
		sc.c.Write(context.Background(), wsgate.TextMessage, []byte("{}"))
		return
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if p := r.Push; p != nil {
		switch {
		case p.Pub != nil && p.Channel == clusterChannel:
			sc.pubs = append(sc.pubs, p.Pub)
		case p.Unsubscribe != nil && p.Channel == clusterChannel:
			sc.unsubs = append(sc.unsubs, p.Unsubscribe.Code)
		}
		return
	}
	if r.Subscribe != nil && r.Error == nil {
		// Recovered publications come before the live ones.
		sc.pubs = append(sc.pubs, r.Subscribe.Publications...)
		sc.epoch = r.Subscribe.Epoch
		sc.unsubs = nil
	}
	if ch, ok := sc.replies[r.Id]; ok {
		delete(sc.replies, r.Id)
		ch <- r
	}
}

// call sends cmd and waits for its reply.
func (sc *streamClient) call(cmd *protocol.Command) (*protocol.Reply, error) {
	ch := make(chan *protocol.Reply, 1)
	sc.mu.Lock()
	sc.nextID++
	cmd.Id = sc.nextID
	sc.replies[cmd.Id] = ch
	sc.mu.Unlock()
	b, err := protocol.NewJSONCommandEncoder().Encode(cmd)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	if err := sc.c.Write(ctx, wsgate.TextMessage, b); err != nil {
		return nil, fmt.Errorf("%s: %w", sc.name, err)
	}
	select {
	case r := <-ch:
		return r, nil
	case <-sc.done:
		return nil, fmt.Errorf("%s: connection ended: %w", sc.name, sc.endErr())
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: no reply to command %d: %w", sc.name, cmd.Id, ctx.Err())
	}
}

func (sc *streamClient) endErr() error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.ended
}

// subscribe subscribes to the test channel; with since, it recovers from
// that position.
func (sc *streamClient) subscribe(t *testing.T, since *protocol.StreamPosition) *protocol.SubscribeResult {
	t.Helper()
	req := &protocol.SubscribeRequest{Channel: clusterChannel}
	if since != nil {
		req.Recover, req.Offset, req.Epoch = true, since.Offset, since.Epoch
	}
	r, err := sc.call(&protocol.Command{Subscribe: req})
	if err != nil || r.Error != nil {
		t.Fatalf("%s: subscribe: %v %v", sc.name, r, err)
	}
	return r.Subscribe
}

// publish publishes {"n": n} from the client.
func (sc *streamClient) publish(n int) error {
	r, err := sc.call(&protocol.Command{Publish: &protocol.PublishRequest{Channel: clusterChannel, Data: fmt.Appendf(nil, `{"n":%d}`, n)}})
	if err == nil && r.Error != nil {
		err = fmt.Errorf("%s: publish: %d %s", sc.name, r.Error.Code, r.Error.Message)
	}
	return err
}

// received returns a copy of the publications received so far, and the
// unsubscribe codes.
func (sc *streamClient) received() ([]*protocol.Publication, []uint32) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return slices.Clone(sc.pubs), slices.Clone(sc.unsubs)
}

// last returns the offset of the last publication received.
func (sc *streamClient) last() uint64 {
	pubs, _ := sc.received()
	if len(pubs) == 0 {
		return 0
	}
	return pubs[len(pubs)-1].Offset
}

// waitOffset waits until the client received offset n, or was told with
// an unsubscribe push that it lost publications.
func (sc *streamClient) waitOffset(t *testing.T, n uint64) {
	t.Helper()
	deadline := time.Now().Add(clusterWait)
	for {
		pubs, unsubs := sc.received()
		if len(unsubs) > 0 || len(pubs) > 0 && pubs[len(pubs)-1].Offset >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: offset %d not received within %v: %d publications, last %d", sc.name, n, clusterWait, len(pubs), sc.last())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkStream fails unless pubs are offsets 1..n, once each and in order.
func checkStream(t *testing.T, who string, pubs []*protocol.Publication, n uint64) {
	t.Helper()
	if uint64(len(pubs)) != n {
		t.Errorf("%s: %d publications, want %d: %v", who, len(pubs), n, offsets(pubs))
		return
	}
	for i, p := range pubs {
		if p.Offset != uint64(i+1) {
			t.Errorf("%s: publication %d has offset %d: %v", who, i, p.Offset, offsets(pubs))
			return
		}
	}
}

func offsets(pubs []*protocol.Publication) []uint64 {
	out := make([]uint64, len(pubs))
	for i, p := range pubs {
		out[i] = p.Offset
	}
	return out
}

// dataN decodes the n of a publication's {"n": n}.
func dataN(data []byte) int {
	var v struct{ N int }
	if json.Unmarshal(data, &v) != nil {
		return -1
	}
	return v.N
}

// waitReady waits until a node's /readyz answers want.
func waitReady(t *testing.T, ts *testServer, want int) {
	t.Helper()
	deadline := time.Now().Add(clusterWait)
	for {
		resp, err := httpClient.Get(ts.httpURL() + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz of %s did not answer %d within %v (last: %v %v)", ts.addr, want, clusterWait, resp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// retryPublish publishes {"n": n} through the API until it is
// acknowledged, with an idempotency key so that a retry of a publication
// that was stored after all publishes nothing.
func retryPublish(t *testing.T, ts *testServer, n int) pubResult {
	t.Helper()
	res, err := tryRetryPublish(ts, n)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// tryRetryPublish is retryPublish for any goroutine.
func tryRetryPublish(ts *testServer, n int) (pubResult, error) {
	deadline := time.Now().Add(clusterWait)
	key := fmt.Sprintf("pub-%d", n)
	for {
		res, err := apiPublish(ts.api(), n, key)
		if err == nil {
			return res, nil
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("publishing %d: %w", n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dumpLogsOnFailure prints the nodes' logs when the test fails, or when
// WSGATE_TEST_LOG is set.
func dumpLogsOnFailure(t *testing.T, nodes ...*testServer) {
	t.Cleanup(func() {
		if !t.Failed() && os.Getenv("WSGATE_TEST_LOG") == "" {
			return
		}
		for i, n := range nodes {
			n.logs.mu.Lock()
			t.Logf("node %d (%s) log:\n%s", i, n.addr, n.logs.buf.String())
			n.logs.mu.Unlock()
		}
	})
}
