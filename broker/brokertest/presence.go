package brokertest

import (
	"sort"
	"testing"
	"time"

	"github.com/wsgate/wsgate/broker"
)

func (e *env) presenceNodes(t *testing.T) []int {
	t.Helper()
	var idx []int
	for i, n := range e.nodes {
		if n.Presence != nil {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		t.Skip("no node has a presence manager")
	}
	return idx
}

// expectPresence polls every presence node until ch holds exactly want
// (by client ID, with equal info) and the stats agree.
func (e *env) expectPresence(t *testing.T, ch string, want map[string]*broker.ClientInfo, wantStats broker.PresenceStats) {
	t.Helper()
	for _, i := range e.presenceNodes(t) {
		pm := e.nodes[i].Presence
		eventually(t, e.grace, func() error {
			got, err := pm.Presence(e.ctx(t), ch)
			if err != nil {
				return err
			}
			if len(got) != len(want) {
				return errorf("node %d: presence has %v, want %v", i, keys(got), keys(want))
			}
			for id, w := range want {
				if g, ok := got[id]; !ok || !sameInfo(g, w) {
					return errorf("node %d: presence of %q is %+v, want %+v", i, id, got[id], w)
				}
			}
			stats, err := pm.PresenceStats(e.ctx(t), ch)
			if err != nil {
				return err
			}
			if stats != wantStats {
				return errorf("node %d: stats %+v, want %+v", i, stats, wantStats)
			}
			return nil
		})
	}
}

func keys(m map[string]*broker.ClientInfo) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Entries are added, refreshed and removed on any node and seen on all;
// stats count clients and distinct users, anonymous ones as one user.
func testPresence(t *testing.T, e *env) {
	nodes := e.presenceNodes(t)
	pm := func(k int) broker.PresenceManager { return e.nodes[nodes[k%len(nodes)]].Presence }
	ch := e.channel("presence")

	e.expectPresence(t, ch, map[string]*broker.ClientInfo{}, broker.PresenceStats{})

	infos := []*broker.ClientInfo{
		{ClientID: "c1", UserID: "u1", ConnInfo: []byte(`{"n":1}`)},
		{ClientID: "c2", UserID: "u1", ChanInfo: []byte(`{"n":2}`)},
		{ClientID: "c3", UserID: ""},
		{ClientID: "c4", UserID: ""},
		{ClientID: "c5", UserID: "u2"},
	}
	want := map[string]*broker.ClientInfo{}
	for k, info := range infos {
		if err := pm(k).AddPresence(e.ctx(t), ch, info); err != nil {
			t.Fatal(err)
		}
		want[info.ClientID] = info
	}
	// Users: u1, u2 and the anonymous one.
	e.expectPresence(t, ch, want, broker.PresenceStats{NumClients: 5, NumUsers: 3})

	// A refresh replaces the entry and counts it once.
	refreshed := &broker.ClientInfo{ClientID: "c1", UserID: "u1", ConnInfo: []byte(`{"n":1}`), ChanInfo: []byte(`{"fresh":true}`)}
	if err := pm(1).AddPresence(e.ctx(t), ch, refreshed); err != nil {
		t.Fatal(err)
	}
	want["c1"] = refreshed
	e.expectPresence(t, ch, want, broker.PresenceStats{NumClients: 5, NumUsers: 3})

	// Removal from another node than the one that added.
	if err := pm(2).RemovePresence(e.ctx(t), ch, "c5", "u2"); err != nil {
		t.Fatal(err)
	}
	if err := pm(0).RemovePresence(e.ctx(t), ch, "c3", ""); err != nil {
		t.Fatal(err)
	}
	delete(want, "c5")
	delete(want, "c3")
	e.expectPresence(t, ch, want, broker.PresenceStats{NumClients: 3, NumUsers: 2})

	if err := pm(0).RemovePresence(e.ctx(t), ch, "nobody", "nobody"); err != nil {
		t.Fatalf("removing an absent client: %v", err)
	}
	// Other channels are not affected.
	other := e.channel("presence-other")
	if err := pm(0).AddPresence(e.ctx(t), other, &broker.ClientInfo{ClientID: "c1", UserID: "u9"}); err != nil {
		t.Fatal(err)
	}
	e.expectPresence(t, ch, want, broker.PresenceStats{NumClients: 3, NumUsers: 2})
	e.expectPresence(t, other, map[string]*broker.ClientInfo{"c1": {ClientID: "c1", UserID: "u9"}}, broker.PresenceStats{NumClients: 1, NumUsers: 1})
}

// Entries not refreshed within the TTL expire by themselves (the entries
// of a dead node); refreshed ones stay.
func testPresenceExpiry(t *testing.T, e *env) {
	if e.presenceTTL <= 0 {
		t.Skip("Setup.PresenceTTL is zero")
	}
	nodes := e.presenceNodes(t)
	pm := e.nodes[nodes[0]].Presence
	ch := e.channel("presence-expiry")
	kept := &broker.ClientInfo{ClientID: "kept", UserID: "u1"}
	dropped := &broker.ClientInfo{ClientID: "dropped", UserID: "u2"}
	added := time.Now()
	for _, info := range []*broker.ClientInfo{kept, dropped} {
		if err := pm.AddPresence(e.ctx(t), ch, info); err != nil {
			t.Fatal(err)
		}
	}
	// Reads may trail writes a little (a replica behind): wait until both
	// entries show.
	e.expectPresence(t, ch, map[string]*broker.ClientInfo{"kept": kept, "dropped": dropped}, broker.PresenceStats{NumClients: 2, NumUsers: 2})
	// Refresh "kept" well within the TTL until "dropped" is gone; "kept"
	// must be there all along.
	refresh := time.NewTicker(e.presenceTTL / 4)
	defer refresh.Stop()
	deadline := time.After(e.presenceTTL + e.grace)
	for {
		got, err := pm.Presence(e.ctx(t), ch)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := got["kept"]; !ok {
			t.Fatalf("a refreshed entry expired: %v", keys(got))
		}
		if _, ok := got["dropped"]; !ok {
			break
		}
		select {
		case <-refresh.C:
			if err := pm.AddPresence(e.ctx(t), ch, kept); err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatalf("an entry not refreshed for %v (TTL %v) is still present", time.Since(added), e.presenceTTL)
		}
	}
	e.expectPresence(t, ch, map[string]*broker.ClientInfo{"kept": kept}, broker.PresenceStats{NumClients: 1, NumUsers: 1})
}
