package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// pubsubPeers are the servers the pub/sub matrix compares wsgate's hub
// with (bench/run-pubsub.sh).
var pubsubPeers = []string{"centrifugo", "gorilla-hub", "gws-broadcast", "nbio-hub"}

// pubsubCase is a pub/sub case name taken apart:
// pubsub-max-n<N>-s<size>, pubsub-p99-n<N>-r<deliveries/s>,
// pubsub-idle-n<N> or pubsub-connect.
type pubsubCase struct {
	name, kind    string
	n, size, rate int
	kindOrder     int
}

var pubsubKinds = []string{"max", "p99", "idle", "connect"}

func parsePubSubCase(name string) pubsubCase {
	c := pubsubCase{name: name}
	parts := strings.Split(strings.TrimPrefix(name, "pubsub-"), "-")
	c.kind = parts[0]
	c.kindOrder = slices.Index(pubsubKinds, c.kind)
	if c.kindOrder < 0 {
		c.kindOrder = len(pubsubKinds)
	}
	for _, p := range parts[1:] {
		if len(p) < 2 {
			continue
		}
		v, err := strconv.Atoi(p[1:])
		if err != nil {
			continue
		}
		switch p[0] {
		case 'n':
			c.n = v
		case 's':
			c.size = v
		case 'r':
			c.rate = v
		}
	}
	return c
}

// pubsubColumns returns the columns for the pub/sub cases present in m.
func pubsubColumns(m map[string]map[string]Summary) []column {
	var cases []pubsubCase
	seen := map[string]bool{}
	for _, byCase := range m {
		for name := range byCase {
			if !seen[name] {
				seen[name] = true
				cases = append(cases, parsePubSubCase(name))
			}
		}
	}
	slices.SortFunc(cases, func(a, b pubsubCase) int {
		if a.kindOrder != b.kindOrder {
			return a.kindOrder - b.kindOrder
		}
		if a.n != b.n {
			return a.n - b.n
		}
		if a.size != b.size {
			return a.size - b.size
		}
		return strings.Compare(a.name, b.name)
	})
	var cols []column
	for _, c := range cases {
		switch c.kind {
		case "max":
			cols = append(cols, column{c.name, fmt.Sprintf("deliveries/s, N=%s × %s", count(c.n), bytesize(c.size)), rate, true, false, kilo})
		case "p99":
			cols = append(cols, column{c.name, fmt.Sprintf("p99 at %s deliveries/s, N=%s", kilo(float64(c.rate)), count(c.n)), rate, true, true, us})
		case "idle":
			cols = append(cols, column{c.name, fmt.Sprintf("RSS per idle subscribed conn (%s)", count(c.n)), rate, false, true, kib})
		case "connect":
			cols = append(cols,
				column{c.name, "connect+subscribe, µs of server CPU", usPerOp, false, true, micro},
				column{c.name, "connect+subscribe cycles/s", rate, true, false, kilo})
		default:
			cols = append(cols, column{c.name, c.name, rate, true, false, kilo})
		}
	}
	return cols
}

// usPerOp is the server CPU per connect cycle, from cycles per CPU-second.
func usPerOp(s Summary) float64 {
	if s.PerCPU == 0 {
		return 0
	}
	return 1e6 / s.PerCPU
}

func micro(v float64) string { return fmt.Sprintf("%.0f", v) }

func count(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func bytesize(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}

// writePubSub writes the tables of the pub/sub matrix.
func writePubSub(w io.Writer, m map[string]map[string]Summary) {
	servers := order(m)
	cols := pubsubColumns(m)
	fmt.Fprintln(w, "\nPub/sub (median of the runs, min–max in parentheses; deliveries/s is the best step with nothing lost, duplicated or reordered and p99 within -max-lag; ⚠ counts errors, such as losses at the fixed rate of the p99 case):")
	writeValues(w, m, servers, cols)

	fmt.Fprintln(w, "\nRatios of medians to the best pub/sub peer (for latency, RSS and CPU per cycle below 1 is better, for rates above 1):")
	header(w, "ratio", cols)
	for _, s := range servers {
		fmt.Fprintf(w, "| %s ÷ best peer |", bold(s))
		for _, c := range cols {
			sm, ok := m[s][c.cas]
			other, name := bestPeer(m, c, pubsubPeers)
			if !ok || other == 0 || c.get(sm) == 0 {
				fmt.Fprint(w, " – |")
				continue
			}
			fmt.Fprintf(w, " %s |", bold2(s, fmt.Sprintf("%.2f %s", c.get(sm)/other, name)))
		}
		fmt.Fprintln(w)
	}

	fmt.Fprintln(w, "\nCost and saturation of the rate cases (medians; p99 of the best step; CPU in percent of one core during the step):")
	fmt.Fprintln(w, "\n| server | case | deliveries per server CPU-s | p99 | server CPU | generator CPU |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|")
	for _, s := range servers {
		for _, c := range cols {
			pc := parsePubSubCase(c.cas)
			if pc.kind != "max" && pc.kind != "p99" {
				continue
			}
			sm, ok := m[s][c.cas]
			if !ok {
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", s, c.cas,
				orDash(sm.PerCPU, kilo), orDash(sm.P99us, us), orDash(sm.ServerCPU, percent), orDash(sm.GenCPU, percent))
		}
	}
}

func percent(v float64) string { return fmt.Sprintf("%.0f%%", v) }

// orDash formats v, or a dash when there is no figure.
func orDash(v float64, format func(float64) string) string {
	if v == 0 {
		return "–"
	}
	return format(v)
}
