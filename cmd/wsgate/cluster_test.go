package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/wsgate/wsgate"
)

// clusterStartTimeout bounds a cluster node's start: its embedded NATS
// server waits for the others and for JetStream's leaders.
const clusterStartTimeout = 60 * time.Second

// TestClusterEmbeddedProcesses runs three wsgate processes with
// -cluster-embedded and routes to each other, with nothing else running:
// they form a cluster (a publication through one node's API reaches a
// client on another), their logs name the mode and never the route
// password. Then one node is killed with SIGKILL while publications
// stream: the others stay ready, no acknowledged publication is lost, and
// the killed node's client, back on a surviving node, recovers what it
// missed. SIGTERM then stops the survivors cleanly.
func TestClusterEmbeddedProcesses(t *testing.T) {
	t.Parallel()
	routes := make([]string, 3)
	for i := range routes {
		routes[i] = freeAddr(t)
	}
	const routeSecret = "route-secret-31415"
	env := []string{"WSGATE_API_KEY=cluster-key", "WSGATE_CLUSTER_USER=route", "WSGATE_CLUSTER_PASSWORD=" + routeSecret}
	nodes := make([]*clusterNode, 3)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			nodes[i] = startClusterProcess(t, env, "-allow-anonymous", "-history-size=100", "-history-ttl=5m", "-heartbeat=0",
				"-cluster-embedded", "-cluster-addr="+routes[i], "-cluster-routes="+strings.Join(routes, ","),
				"-cluster-store-dir="+t.TempDir(), fmt.Sprintf("-cluster-node-name=node%d", i))
		})
	}
	wg.Wait()
	for i, p := range nodes {
		if p == nil {
			t.FailNow()
		}
		waitProcessReady(t, p, http.StatusOK)
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(p.log(), `"msg":"broker","mode":"nats-embedded"`) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // the log is read on another goroutine
		}
		if !strings.Contains(p.log(), `"msg":"broker","mode":"nats-embedded"`) || !strings.Contains(p.log(), `"replicas":3`) {
			t.Errorf("node %d: no broker line with the embedded mode and 3 replicas:\n%s", i, p.log())
		}
	}
	survivor := dialProcessHub(t, nodes[2], "on node 2")
	doomed := dialProcessHub(t, nodes[1], "on node 1")

	// Publications stream through node 0's API; node 1 dies in the middle.
	acked := make(map[uint64]int)
	n := 0
	publish := func() {
		n++
		off, err := publishRetry(nodes[0].addr, n)
		if err != nil {
			t.Fatalf("publication %d: %v\nnode 0:\n%s", n, err, nodes[0].log())
		}
		acked[off] = n
	}
	for range 10 {
		publish()
	}
	doomed.waitOffset(t, 10)
	nodes[1].cmd.Process.Kill()
	for range 20 {
		publish()
	}
	last := uint64(n)
	for off := range acked {
		if off > last {
			t.Errorf("offset %d past the %d publications", off, last)
		}
	}
	for _, i := range []int{0, 2} {
		waitProcessReady(t, nodes[i], http.StatusOK)
	}
	survivor.waitOffset(t, last)
	survivor.check(t, acked, last)

	// The killed node's client comes back on node 0 and recovers the rest.
	doomed.waitEnded(t)
	back := dialProcessHub(t, nodes[0], "back on node 0")
	back.resubscribe(t, doomed)
	back.waitOffset(t, last)
	back.check(t, acked, last)

	for i, p := range nodes {
		if strings.Contains(p.log(), routeSecret) {
			t.Errorf("node %d logged the route password", i)
		}
	}
	for _, i := range []int{0, 2} {
		nodes[i].cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, i := range []int{0, 2} {
		if code := nodes[i].wait(t, 30*time.Second); code != 0 {
			t.Errorf("node %d: exit code %d after SIGTERM\n%s", i, code, nodes[i].log())
		}
		if !strings.Contains(nodes[i].log(), "embedded NATS server stopped") {
			t.Errorf("node %d did not stop its NATS server:\n%s", i, nodes[i].log())
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// clusterNode is a wsgate process whose log can be read while it runs.
type clusterNode struct {
	*process
	logMu  sync.Mutex
	logBuf bytes.Buffer
}

// log returns what the process wrote to stderr so far.
func (p *clusterNode) log() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.logBuf.String()
}

// startClusterProcess is startProcessEnv for a cluster node, which may
// take a while to start, and may be called on any goroutine (it reports
// with t.Error and returns nil).
func startClusterProcess(t *testing.T, env []string, args ...string) *clusterNode {
	cmd := exec.Command(os.Args[0], append([]string{"-addr=127.0.0.1:0", "-log-format=json"}, args...)...)
	cmd.Env = append(append(os.Environ(), runMainEnv+"=1"), env...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Error(err)
		return nil
	}
	p := &clusterNode{process: &process{cmd: cmd, stderr: &bytes.Buffer{}, exited: make(chan struct{})}}
	addrc := make(chan string, 1)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(pr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.logMu.Lock()
			p.logBuf.Write(append(sc.Bytes(), '\n'))
			p.logMu.Unlock()
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "wsgate listening" {
				addrc <- rec.Addr
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() {
		p.err = cmd.Wait()
		pw.Close()
		<-readDone
		close(p.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
	})
	select {
	case p.addr = <-addrc:
		return p
	case <-p.exited:
		t.Errorf("wsgate exited early: %v\n%s", p.err, p.log())
	case <-time.After(clusterStartTimeout):
		t.Errorf("wsgate did not log its address within %v:\n%s", clusterStartTimeout, p.log())
	}
	return nil
}

func waitProcessReady(t *testing.T, p *clusterNode, want int) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(clusterStartTimeout)
	for {
		resp, err := client.Get("http://" + p.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz of %s is not %d: %v %v", p.addr, want, resp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// publishRetry publishes {"n": n} to "news" through a node's API until it
// is acknowledged, with an idempotency key, and returns its offset.
func publishRetry(addr string, n int) (uint64, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	body := fmt.Sprintf(`{"channel":"news","data":{"n":%d},"idempotency_key":"k%d"}`, n, n)
	deadline := time.Now().Add(clusterStartTimeout)
	for {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/api/publish", strings.NewReader(body))
		req.Header.Set("X-API-Key", "cluster-key")
		var ans struct {
			Error  any
			Result struct{ Offset uint64 }
		}
		resp, err := client.Do(req)
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&ans)
			resp.Body.Close()
			if err == nil && ans.Error != nil {
				err = fmt.Errorf("error %v", ans.Error)
			}
			if err == nil {
				return ans.Result.Offset, nil
			}
		}
		if time.Now().After(deadline) {
			return 0, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// processClient is an anonymous hub client subscribed to "news", whose
// reader keeps the publications.
type processClient struct {
	name string
	c    *wsgate.Conn
	done chan struct{}

	mu     sync.Mutex
	pubs   []*protocol.Publication
	unsubs int
	epoch  string
	reply  chan *protocol.Reply
}

func dialProcessHub(t *testing.T, p *clusterNode, name string) *processClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := wsgate.Dial(ctx, "ws://"+p.addr+"/connection/websocket", &wsgate.Options{PingInterval: -1})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	pc := &processClient{name: name, c: c, done: make(chan struct{}), reply: make(chan *protocol.Reply, 4)}
	go pc.read()
	t.Cleanup(func() {
		c.CloseNow()
		<-pc.done
	})
	pc.call(t, &protocol.Command{Id: 1, Connect: &protocol.ConnectRequest{}})
	pc.call(t, &protocol.Command{Id: 2, Subscribe: &protocol.SubscribeRequest{Channel: "news"}})
	return pc
}

func (pc *processClient) read() {
	defer close(pc.done)
	for {
		_, frame, err := pc.c.Read(context.Background())
		if err != nil {
			return
		}
		dec := protocol.NewJSONReplyDecoder(frame)
		for {
			r, err := dec.Decode()
			if err != nil {
				break
			}
			switch {
			case r.Id == 0 && r.Push == nil:
				pc.c.Write(context.Background(), wsgate.TextMessage, []byte("{}"))
			case r.Push != nil && r.Push.Pub != nil:
				pc.mu.Lock()
				pc.pubs = append(pc.pubs, r.Push.Pub)
				pc.mu.Unlock()
			case r.Push != nil && r.Push.Unsubscribe != nil:
				pc.mu.Lock()
				pc.unsubs++
				pc.mu.Unlock()
			case r.Push == nil:
				if r.Subscribe != nil {
					pc.mu.Lock()
					pc.pubs = append(pc.pubs, r.Subscribe.Publications...)
					pc.epoch, pc.unsubs = r.Subscribe.Epoch, 0
					pc.mu.Unlock()
				}
				pc.reply <- r
			}
		}
	}
}

func (pc *processClient) call(t *testing.T, cmd *protocol.Command) *protocol.Reply {
	t.Helper()
	b, _ := protocol.NewJSONCommandEncoder().Encode(cmd)
	if err := pc.c.Write(context.Background(), wsgate.TextMessage, b); err != nil {
		t.Fatalf("%s: %v", pc.name, err)
	}
	select {
	case r := <-pc.reply:
		if r.Error != nil {
			t.Fatalf("%s: command %d: %v", pc.name, cmd.Id, r.Error)
		}
		return r
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no reply to command %d", pc.name, cmd.Id)
	}
	return nil
}

// resubscribe subscribes pc to "news" from where other's publications
// end, recovering the rest.
func (pc *processClient) resubscribe(t *testing.T, other *processClient) {
	t.Helper()
	other.mu.Lock()
	seen := append([]*protocol.Publication(nil), other.pubs...)
	epoch := other.epoch
	other.mu.Unlock()
	pc.mu.Lock()
	pc.pubs = seen
	subscribed := pc.unsubs == 0
	pc.mu.Unlock()
	var offset uint64
	if len(seen) > 0 {
		offset = seen[len(seen)-1].Offset
	}
	if subscribed {
		pc.call(t, &protocol.Command{Id: 3, Unsubscribe: &protocol.UnsubscribeRequest{Channel: "news"}})
	}
	r := pc.call(t, &protocol.Command{Id: 4, Subscribe: &protocol.SubscribeRequest{Channel: "news", Recover: true, Offset: offset, Epoch: epoch}})
	if !r.Subscribe.Recovered {
		t.Fatalf("%s: not recovered from %d: %+v", pc.name, offset, r.Subscribe)
	}
}

func (pc *processClient) waitOffset(t *testing.T, n uint64) {
	t.Helper()
	deadline := time.Now().Add(clusterStartTimeout)
	for {
		pc.mu.Lock()
		got := len(pc.pubs) > 0 && pc.pubs[len(pc.pubs)-1].Offset >= n
		told := pc.unsubs > 0
		pc.mu.Unlock()
		if got {
			return
		}
		if told {
			// Told it lost publications: recover as an SDK does.
			pc.resubscribe(t, pc)
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: offset %d not received", pc.name, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (pc *processClient) waitEnded(t *testing.T) {
	t.Helper()
	select {
	case <-pc.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: still connected", pc.name)
	}
}

// check fails unless pc received offsets 1..last once each, in order, and
// each acknowledged publication at its offset.
func (pc *processClient) check(t *testing.T, acked map[uint64]int, last uint64) {
	t.Helper()
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if uint64(len(pc.pubs)) != last {
		t.Fatalf("%s: %d publications, want %d", pc.name, len(pc.pubs), last)
	}
	for i, p := range pc.pubs {
		var d struct{ N int }
		json.Unmarshal(p.Data, &d)
		if p.Offset != uint64(i+1) || acked[p.Offset] != 0 && acked[p.Offset] != d.N {
			t.Fatalf("%s: publication %d: offset %d data %s (acknowledged: n=%d)", pc.name, i, p.Offset, p.Data, acked[p.Offset])
		}
	}
}
