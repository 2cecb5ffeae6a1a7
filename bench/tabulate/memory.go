package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// memCase is a memory case name taken apart (bench/idle.sh):
// mem-<kind>-n<N>, kind being plain (connections never used), traffic
// (each first exchanged fragmented messages) or deflate (permessage-deflate
// offered like a browser, then compressed traffic).
type memCase struct {
	name, kind string
	n          int
}

var memKinds = []string{"plain", "traffic", "deflate"}

var memTitles = map[string]string{
	"plain":   "never used",
	"traffic": "after traffic",
	"deflate": "deflate, after traffic",
}

func parseMemCase(name string) memCase {
	c := memCase{name: name}
	parts := strings.Split(strings.TrimPrefix(name, "mem-"), "-")
	c.kind = parts[0]
	for _, p := range parts[1:] {
		if v, err := strconv.Atoi(strings.TrimPrefix(p, "n")); err == nil && strings.HasPrefix(p, "n") {
			c.n = v
		}
	}
	return c
}

func (c memCase) title() string {
	t := memTitles[c.kind]
	if t == "" {
		t = c.kind
	}
	return fmt.Sprintf("%s, %s conns", t, group(c.n))
}

// memColumns orders the cases present: by kind, then by connections.
func memColumns(m map[string]map[string]Summary) []memCase {
	var cases []memCase
	seen := map[string]bool{}
	for _, byCase := range m {
		for name := range byCase {
			if !seen[name] {
				seen[name] = true
				cases = append(cases, parseMemCase(name))
			}
		}
	}
	kindIndex := func(k string) int {
		if i := slices.Index(memKinds, k); i >= 0 {
			return i
		}
		return len(memKinds)
	}
	slices.SortFunc(cases, func(a, b memCase) int {
		if d := kindIndex(a.kind) - kindIndex(b.kind); d != 0 {
			return d
		}
		if a.kind != b.kind {
			return strings.Compare(a.kind, b.kind)
		}
		return a.n - b.n
	})
	return cases
}

// writeMemory writes the memory tables: server RSS and kernel slab per
// idle connection, and wsgate against the lowest of the other servers.
func writeMemory(w io.Writer, m map[string]map[string]Summary) {
	servers := order(m)
	cases := memColumns(m)
	table := func(intro string, get func(Summary) float64) {
		fmt.Fprintln(w, "\n"+intro)
		fmt.Fprint(w, "\n| server |")
		for _, c := range cases {
			fmt.Fprintf(w, " %s |", c.title())
		}
		fmt.Fprint(w, "\n|---|")
		for range cases {
			fmt.Fprint(w, "---:|")
		}
		fmt.Fprintln(w)
		for _, s := range servers {
			fmt.Fprintf(w, "| %s |", bold(s))
			for _, c := range cases {
				sm, ok := m[s][c.name]
				if !ok || get(sm) == 0 {
					fmt.Fprint(w, " – |")
					continue
				}
				cell := fmt.Sprintf("%.2f KiB", get(sm))
				if sm.Runs > 1 && get(sm) == sm.Median {
					cell += fmt.Sprintf(" (%.2f–%.2f)", sm.Min, sm.Max)
				}
				if sm.ErrorCount > 0 {
					cell += fmt.Sprintf(", %d errors", sm.ErrorCount)
				}
				fmt.Fprintf(w, " %s |", bold2(s, cell))
			}
			fmt.Fprintln(w)
		}
		if _, ok := m["wsgate"]; !ok {
			return
		}
		fmt.Fprint(w, "| **wsgate ÷ lowest other** |")
		for _, c := range cases {
			ws, ok := m["wsgate"][c.name]
			best, bestName := 0.0, ""
			for _, s := range servers {
				if s == "wsgate" || s == reference {
					continue
				}
				if sm, ok := m[s][c.name]; ok && get(sm) > 0 && (bestName == "" || get(sm) < best) {
					best, bestName = get(sm), s
				}
			}
			if !ok || get(ws) == 0 || bestName == "" {
				fmt.Fprint(w, " – |")
				continue
			}
			fmt.Fprintf(w, " **%.2f** %s |", get(ws)/best, bestName)
		}
		fmt.Fprintln(w)
	}
	table("Server memory per idle connection (VmRSS growth ÷ connections held; median of the runs, min–max in parentheses):",
		func(s Summary) float64 { return s.Median })
	table("Kernel slab memory per connection (/proc/meminfo Slab growth ÷ connections; both ends of each loopback connection, so about twice one server socket):",
		func(s Summary) float64 { return s.KernelKiB })
}

// group writes n with thousands separators.
func group(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
