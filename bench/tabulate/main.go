// Command tabulate turns the wsgate-bench -json reports collected by
// bench/run.sh and bench/run-pubsub.sh into the Markdown tables of
// docs/BENCHMARKS.md and a JSON results file with medians.
//
// Each report's label must be "<server> <case>", for example
// "gorilla echo-100x64" or "centrifugo pubsub-max-n1000-s64"; every case
// may have several runs, of which the median is shown. Cases whose name
// starts with "pubsub-" form the pub/sub matrix, with its own peers.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/wsgate/wsgate/internal/loadtest"
)

// metricFor says which figure of a report a case of the matrix is about:
// RSS per connection for idle cases, connects (cycles) per second for
// connect cases, the p99 latency for pubsub-p99 cases and MsgsPerSec
// (echo: replies, pubsub-max: deliveries) for the rest.
func metricFor(cas string) func(*loadtest.Report) float64 {
	switch {
	case cas == "idle" || strings.HasPrefix(cas, "pubsub-idle") || strings.HasPrefix(cas, "mem-"):
		return func(r *loadtest.Report) float64 {
			if r.Server == nil {
				return 0
			}
			return r.Server.RSSPerConnKiB
		}
	case cas == "connect" || cas == "pubsub-connect":
		return func(r *loadtest.Report) float64 { return r.ConnectsPerSec }
	case strings.HasPrefix(cas, "pubsub-p99-"):
		return func(r *loadtest.Report) float64 {
			if r.Latency == nil {
				return 0
			}
			return r.Latency.P99
		}
	}
	return func(r *loadtest.Report) float64 { return r.MsgsPerSec }
}

// peers are the libraries wsgate is compared with; epollref is the
// reference ceiling and tcpecho the generator's raw ceiling.
var peers = []string{"tutorial", "gorilla", "gws", "nbio"}

const reference = "epollref"

type labeled struct {
	server, cas string
	rep         *loadtest.Report
}

// Results is the JSON file tabulate writes.
type Results struct {
	Generated time.Time                     `json:"generated"`
	Machine   Machine                       `json:"machine"`
	Medians   map[string]map[string]Summary `json:"medians"` // server → case → summary
	Reports   []*loadtest.Report            `json:"reports"`
}

// Machine describes where the numbers come from.
type Machine struct {
	CPU    string `json:"cpu"`
	NumCPU int    `json:"nproc"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
}

// Summary is the median of a case's runs and their spread.
type Summary struct {
	Runs       int     `json:"runs"`
	Median     float64 `json:"median"`
	Min        float64 `json:"min"`
	Max        float64 `json:"max"`
	PerCPU     float64 `json:"per_server_cpu_sec,omitempty"` // median msgs (connects) per server CPU-second
	P99us      float64 `json:"p99_us,omitempty"`
	ServerCPU  float64 `json:"server_cpu_percent,omitempty"`
	KernelKiB  float64 `json:"kernel_slab_per_conn_kib,omitempty"` // idle: median kernel slab growth per connection
	GenCPU     float64 `json:"generator_cpu_percent,omitempty"`
	ErrorCount uint64  `json:"errors"`
}

func main() {
	in := flag.String("in", "", "file of concatenated wsgate-bench -json reports (default stdin)")
	out := flag.String("json", "", "write the results (medians and every report) to this file")
	flag.Parse()
	var r io.Reader = os.Stdin
	if *in != "" {
		f, err := os.Open(*in)
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		r = f
	}
	reports, err := decode(r)
	if err != nil {
		log.Fatal(err)
	}
	res := Results{Generated: time.Now().UTC(), Machine: machine(), Medians: medians(reports)}
	for _, l := range reports {
		res.Reports = append(res.Reports, l.rep)
	}
	writeMarkdown(os.Stdout, res)
	if *out != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

func decode(r io.Reader) ([]labeled, error) {
	dec := json.NewDecoder(r)
	var out []labeled
	for {
		var rep loadtest.Report
		err := dec.Decode(&rep)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading reports: %w", err)
		}
		server, cas, ok := strings.Cut(rep.Label, " ")
		if !ok {
			return nil, fmt.Errorf("report label %q is not \"<server> <case>\"", rep.Label)
		}
		out = append(out, labeled{server, cas, &rep})
	}
}

func medians(reports []labeled) map[string]map[string]Summary {
	type key struct{ server, cas string }
	groups := map[key][]*loadtest.Report{}
	for _, l := range reports {
		k := key{l.server, l.cas}
		groups[k] = append(groups[k], l.rep)
	}
	out := map[string]map[string]Summary{}
	for k, reps := range groups {
		metric := metricFor(k.cas)
		var vals, eff, p99, scpu, gcpu, kern []float64
		var errs uint64
		for _, r := range reps {
			vals = append(vals, metric(r))
			switch {
			case r.PerServerCPUSec > 0:
				eff = append(eff, r.PerServerCPUSec)
			case r.Server != nil && r.Server.CPUPercent > 0 && r.Seconds > 0 && r.Messages > 0:
				eff = append(eff, float64(r.Messages)/(r.Seconds*r.Server.CPUPercent/100))
			}
			if r.Latency != nil {
				p99 = append(p99, r.Latency.P99)
			}
			if r.Server != nil {
				scpu = append(scpu, r.Server.CPUPercent)
			}
			if r.Generator != nil {
				gcpu = append(gcpu, r.Generator.CPUPercent)
			}
			if r.KernelSlabPerConnKiB != 0 {
				kern = append(kern, r.KernelSlabPerConnKiB)
			}
			errs += r.ErrorCount
		}
		if out[k.server] == nil {
			out[k.server] = map[string]Summary{}
		}
		out[k.server][k.cas] = Summary{
			Runs:       len(reps),
			Median:     median(vals),
			Min:        slices.Min(vals),
			Max:        slices.Max(vals),
			PerCPU:     median(eff),
			P99us:      median(p99),
			ServerCPU:  median(scpu),
			GenCPU:     median(gcpu),
			KernelKiB:  median(kern),
			ErrorCount: errs,
		}
	}
	return out
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// order lists the servers: peers, wsgate, the reference, then any other.
func order(m map[string]map[string]Summary) []string {
	known := slices.Concat(peers, pubsubPeers, []string{"wsgate", reference, "tcpecho"})
	var out []string
	for _, s := range known {
		if _, ok := m[s]; ok {
			out = append(out, s)
		}
	}
	var rest []string
	for s := range m {
		if !slices.Contains(known, s) {
			rest = append(rest, s)
		}
	}
	sort.Strings(rest)
	return append(out, rest...)
}

// column is one number of the tables: a case and which figure of it.
type column struct {
	cas, title string
	get        func(Summary) float64
	spread     bool // show (min–max) of the runs
	lower      bool // lower is better
	format     func(float64) string
}

func rate(s Summary) float64   { return s.Median }
func perCPU(s Summary) float64 { return s.PerCPU }

var (
	rateCols = []column{
		{"echo-100x64", "echo msgs/s, 100 × 64 B", rate, true, false, kilo},
		{"echo-1000x1k", "echo msgs/s, 1,000 × 1 KiB", rate, true, false, kilo},
		{"idle", "RSS per idle conn", rate, false, true, kib},
		{"connect", "connects/s", rate, true, false, kilo},
	}
	cpuCols = []column{
		{"echo-100x64", "echo 100 × 64 B, msgs per server CPU-s", perCPU, false, false, kilo},
		{"echo-1000x1k", "echo 1,000 × 1 KiB, msgs per server CPU-s", perCPU, false, false, kilo},
		{"connect", "connects per server CPU-s", perCPU, false, false, kilo},
	}
)

func writeMarkdown(w io.Writer, res Results) {
	m := res.Medians
	fmt.Fprintf(w, "Machine: %s, %d CPUs, Linux %s, %s. Generated %s.\n",
		res.Machine.CPU, res.Machine.NumCPU, res.Machine.Kernel, res.Machine.Go, res.Generated.Format(time.RFC3339))
	echo, ps, mem := splitCases(m)
	if len(echo) > 0 {
		writeEcho(w, echo)
	}
	if len(ps) > 0 {
		writePubSub(w, ps)
	}
	if len(mem) > 0 {
		writeMemory(w, mem)
	}
}

// splitCases separates the echo matrix, the pubsub matrix and the memory
// cases (bench/idle.sh).
func splitCases(m map[string]map[string]Summary) (echo, ps, mem map[string]map[string]Summary) {
	echo, ps, mem = map[string]map[string]Summary{}, map[string]map[string]Summary{}, map[string]map[string]Summary{}
	for server, cases := range m {
		for cas, sm := range cases {
			dst := echo
			switch {
			case strings.HasPrefix(cas, "pubsub-"):
				dst = ps
			case strings.HasPrefix(cas, "mem-"):
				dst = mem
			}
			if dst[server] == nil {
				dst[server] = map[string]Summary{}
			}
			dst[server][cas] = sm
		}
	}
	return echo, ps, mem
}

// writeEcho writes the tables of the echo matrix (bench/run.sh).
func writeEcho(w io.Writer, m map[string]map[string]Summary) {
	servers := order(m)
	fmt.Fprintln(w, "\nRates (median of the runs, min–max in parentheses):")
	writeValues(w, m, servers, rateCols)
	fmt.Fprintln(w, "\nServer cost: work done per second of CPU time the server used (median). It does not drop when another process steals a core, so it is the steadier comparison on a shared machine:")
	writeValues(w, m, servers, cpuCols)

	fmt.Fprintln(w, "\nRatios of medians (for RSS below 1 is better, for everything else above 1):")
	cols := append(slices.Clone(rateCols), cpuCols...)
	header(w, "ratio", cols)
	for _, s := range servers {
		if s == "tcpecho" || s == reference {
			continue
		}
		for _, vs := range []string{"best peer", reference} {
			fmt.Fprintf(w, "| %s ÷ %s |", bold(s), vs)
			for _, c := range cols {
				sm, ok := m[s][c.cas]
				other, name := 0.0, ""
				if vs == reference {
					other = c.get(m[reference][c.cas])
				} else {
					other, name = bestPeer(m, c, peers)
				}
				if !ok || other == 0 || c.get(sm) == 0 {
					fmt.Fprint(w, " – |")
					continue
				}
				cell := fmt.Sprintf("%.2f", c.get(sm)/other)
				if name != "" {
					cell += " " + name
				}
				fmt.Fprintf(w, " %s |", bold2(s, cell))
			}
			fmt.Fprintln(w)
		}
	}

	fmt.Fprintln(w, "\nLatency and saturation (medians; CPU in percent of one core over the measured window):")
	fmt.Fprintln(w, "\n| server | case | p99 latency | server CPU | generator CPU |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|")
	for _, s := range servers {
		for _, c := range []string{"echo-100x64", "echo-1000x1k", "connect"} {
			sm, ok := m[s][c]
			if !ok {
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %.0f%% | %.0f%% |\n", s, c, us(sm.P99us), sm.ServerCPU, sm.GenCPU)
		}
	}
	if _, ok := m["tcpecho"]; ok {
		fmt.Fprintln(w, "\ntcpecho rows: the generator's raw ceiling (echo -raw: pre-built frames over plain TCP to a byte echo).")
	}
}

func header(w io.Writer, first string, cols []column) {
	fmt.Fprintf(w, "\n| %s |", first)
	for _, c := range cols {
		fmt.Fprintf(w, " %s |", c.title)
	}
	fmt.Fprint(w, "\n|---|")
	for range cols {
		fmt.Fprint(w, "---:|")
	}
	fmt.Fprintln(w)
}

func writeValues(w io.Writer, m map[string]map[string]Summary, servers []string, cols []column) {
	header(w, "server", cols)
	for _, s := range servers {
		fmt.Fprintf(w, "| %s |", bold(s))
		for _, c := range cols {
			sm, ok := m[s][c.cas]
			if !ok || c.get(sm) == 0 {
				cell := "–"
				if ok && sm.ErrorCount > 0 {
					cell += fmt.Sprintf(" ⚠ %d errors", sm.ErrorCount)
				}
				fmt.Fprintf(w, " %s |", cell)
				continue
			}
			cell := c.format(c.get(sm))
			if c.spread && sm.Runs > 1 {
				cell += fmt.Sprintf(" (%s–%s)", c.format(sm.Min), c.format(sm.Max))
			}
			if sm.ErrorCount > 0 {
				cell += fmt.Sprintf(" ⚠ %d errors", sm.ErrorCount)
			}
			fmt.Fprintf(w, " %s |", bold2(s, cell))
		}
		fmt.Fprintln(w)
	}
}

// bestPeer returns the best of peers' figures for a column, and its name.
func bestPeer(m map[string]map[string]Summary, c column, peers []string) (float64, string) {
	best, name := 0.0, ""
	for _, p := range peers {
		sm, ok := m[p][c.cas]
		v := c.get(sm)
		if !ok || v == 0 {
			continue
		}
		if name == "" || (c.lower && v < best) || (!c.lower && v > best) {
			best, name = v, p
		}
	}
	return best, name
}

func bold(s string) string {
	if s == "wsgate" {
		return "**wsgate**"
	}
	return s
}

func bold2(server, cell string) string {
	if server == "wsgate" {
		return "**" + cell + "**"
	}
	return cell
}

func kilo(v float64) string {
	switch {
	case v >= 10000:
		return fmt.Sprintf("%.0fk", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.1fk", v/1000)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func kib(v float64) string {
	if v < 10 {
		return fmt.Sprintf("%.1f KiB", v)
	}
	return fmt.Sprintf("%.0f KiB", v)
}

func us(v float64) string {
	if v >= 1e6 {
		return fmt.Sprintf("%.2f s", v/1e6)
	}
	if v >= 1000 {
		return fmt.Sprintf("%.1f ms", v/1000)
	}
	return fmt.Sprintf("%.0f µs", v)
}

func machine() Machine {
	m := Machine{NumCPU: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}
