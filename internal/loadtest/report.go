package loadtest

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Report is the outcome of a run. It marshals to JSON for machines and
// prints as a summary with WriteText. Latencies are in microseconds, rates
// per second, memory in KiB.
type Report struct {
	Mode        Mode      `json:"mode"`
	Measure     Measure   `json:"measure,omitempty"` // pubsub only
	URL         string    `json:"url"`
	Label       string    `json:"label,omitempty"`
	Started     time.Time `json:"started"`
	Interrupted bool      `json:"interrupted,omitempty"`
	Raw         bool      `json:"raw,omitempty"`

	// Load shape.
	Conns    int    `json:"conns,omitempty"`
	Inflight int    `json:"inflight,omitempty"`
	Size     int    `json:"size,omitempty"`
	Type     string `json:"type,omitempty"`

	// Seconds measured (after warmup).
	Seconds float64 `json:"seconds"`

	// Connections.
	Attempted   uint64 `json:"attempted"`   // dials started
	Established uint64 `json:"established"` // dials that completed the handshake
	// idle: connections still open at the end of the hold, and how long
	// the ramp took.
	Held        uint64  `json:"held,omitempty"`
	RampSeconds float64 `json:"ramp_seconds,omitempty"`
	// idle: growth of the kernel's slab memory (/proc/meminfo Slab) over
	// the ramp and hold, per held connection. On loopback both ends are
	// on this machine, so it counts two sockets per connection.
	KernelSlabPerConnKiB float64 `json:"kernel_slab_per_conn_kib,omitempty"`

	// echo and slow: measured replies; connect: completed cycles; pubsub:
	// deliveries of the best (max) or measured (rate) step, or cycles.
	Messages   uint64   `json:"messages,omitempty"`
	MsgsPerSec float64  `json:"msgs_per_sec,omitempty"`
	MBPerSec   float64  `json:"mb_per_sec,omitempty"` // reply payload, 10^6 bytes
	Latency    *Latency `json:"latency_us,omitempty"`
	// connect only: dial + opening handshake (Latency is the whole cycle).
	Handshake      *Latency `json:"handshake_us,omitempty"`
	ConnectsPerSec float64  `json:"connects_per_sec,omitempty"`
	Ignored        uint64   `json:"ignored,omitempty"` // server messages that were not replies
	// PerServerCPUSec is Messages (echo, slow) or cycles (connect) per
	// second of CPU time the server used, when its PID is known. Unlike
	// the rates it does not drop when other processes steal the server's
	// or the generator's core, so it compares servers on a noisy machine.
	PerServerCPUSec float64 `json:"per_server_cpu_sec,omitempty"`
	// ServerCPUPerOpUS is the inverse: microseconds of server CPU per
	// measured reply, cycle or delivery.
	ServerCPUPerOpUS float64 `json:"server_cpu_us_per_op,omitempty"`

	Errors     []ErrorKind `json:"errors,omitempty"`
	ErrorCount uint64      `json:"error_count"`
	ErrorRatio float64     `json:"error_ratio"` // errors / operations (messages sent + dials)

	Server    *ProcStats    `json:"server,omitempty"`
	Generator *ProcStats    `json:"generator,omitempty"`
	Slow      *SlowReport   `json:"slow,omitempty"`
	PubSub    *PubSubReport `json:"pubsub,omitempty"`
	Notes     []string      `json:"notes,omitempty"`

	ops uint64 // denominator of ErrorRatio
}

// Latency summarises a histogram, in microseconds.
type Latency struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
}

// ErrorKind counts one kind of error, with the first message seen.
type ErrorKind struct {
	Kind    string `json:"kind"`
	Count   uint64 `json:"count"`
	Example string `json:"example,omitempty"`
}

// ProcStats describes a process during the run.
type ProcStats struct {
	PID int `json:"pid"`
	// CPU time used during the measured window, in percent of one core.
	CPUPercent float64 `json:"cpu_percent,omitempty"`
	// Resident set size (VmRSS), KiB.
	RSSBeforeKiB int64 `json:"rss_before_kib,omitempty"`
	RSSAfterKiB  int64 `json:"rss_after_kib,omitempty"`
	RSSPeakKiB   int64 `json:"rss_peak_kib,omitempty"`
	// (RSSAfter - RSSBefore) / established connections, KiB (idle mode).
	RSSPerConnKiB float64 `json:"rss_per_conn_kib,omitempty"`
}

// SlowReport says what happened to the clients that never read.
type SlowReport struct {
	Clients        int            `json:"clients"`
	Sent           uint64         `json:"sent"`             // messages the slow clients got out
	QueueFull      uint64         `json:"queue_full"`       // writes refused by their full send queue
	ClosedByServer int            `json:"closed_by_server"` // slow clients the server disconnected
	CloseCodes     map[string]int `json:"close_codes,omitempty"`
	// Seconds from the start of traffic to the first disconnect, -1 if none.
	FirstCloseAfter float64 `json:"first_close_after_s"`
}

func newReport(cfg *Config) *Report {
	r := &Report{
		Mode:    cfg.Mode,
		URL:     cfg.URL,
		Label:   cfg.Label,
		Started: time.Now(),
		Raw:     cfg.Raw,
	}
	switch cfg.Mode {
	case ModeEcho, ModeSlow:
		r.Conns, r.Inflight, r.Size, r.Type = cfg.Conns, cfg.Inflight, cfg.Size, typeName(cfg.Binary)
	case ModeConnect:
		r.Conns, r.Size, r.Type = cfg.Conns, cfg.Size, typeName(cfg.Binary)
	case ModeIdle:
		r.Conns = cfg.N
	case ModePubSub:
		r.Measure, r.Size = cfg.Measure, cfg.Size
		r.Conns = cfg.N
		if cfg.Measure == MeasureConnect {
			r.Conns, r.Size = cfg.Conns, 0
		}
	}
	return r
}

// cycles reports whether Messages counts connect cycles.
func (r *Report) cycles() bool {
	return r.Mode == ModeConnect || r.Mode == ModePubSub && r.Measure == MeasureConnect
}

func summarize(h *hdrhistogram.Histogram) *Latency {
	if h.TotalCount() == 0 {
		return nil
	}
	us := func(v int64) float64 { return float64(v) / 1e3 }
	return &Latency{
		Count: uint64(h.TotalCount()),
		Mean:  h.Mean() / 1e3,
		P50:   us(h.ValueAtQuantile(50)),
		P90:   us(h.ValueAtQuantile(90)),
		P99:   us(h.ValueAtQuantile(99)),
		P999:  us(h.ValueAtQuantile(99.9)),
		Max:   us(h.Max()),
	}
}

func (r *Report) finish() {
	for _, e := range r.Errors {
		r.ErrorCount += e.Count
	}
	if r.ops > 0 {
		r.ErrorRatio = float64(r.ErrorCount) / float64(r.ops)
	} else if r.ErrorCount > 0 {
		r.ErrorRatio = 1
	}
	if r.Seconds > 0 && r.Messages > 0 {
		r.MsgsPerSec = float64(r.Messages) / r.Seconds
		if r.Mode == ModeEcho || r.Mode == ModeSlow || r.Mode == ModePubSub && !r.cycles() {
			r.MBPerSec = r.MsgsPerSec * float64(r.Size) / 1e6
		}
		if r.cycles() {
			r.ConnectsPerSec = r.MsgsPerSec
			r.MsgsPerSec = 0
		}
		if r.Server != nil && r.Server.CPUPercent > 0 && r.Mode != ModeIdle {
			r.PerServerCPUSec = float64(r.Messages) / (r.Seconds * r.Server.CPUPercent / 100)
			r.ServerCPUPerOpUS = 1e6 / r.PerServerCPUSec
		}
	}
}

// hasError reports whether an error of the kind was counted.
func (r *Report) hasError(kind string) bool {
	for _, e := range r.Errors {
		if e.Kind == kind {
			return true
		}
	}
	return false
}

// WriteText prints the human summary.
func (r *Report) WriteText(w io.Writer) {
	var b strings.Builder
	title := fmt.Sprintf("wsgate-bench %s", r.Mode)
	if r.Raw {
		title += " -raw"
	}
	if r.Measure != "" {
		title += " -measure " + string(r.Measure)
	}
	title += " " + r.URL
	if r.Label != "" {
		title += " (" + r.Label + ")"
	}
	if r.Interrupted {
		title += "  [interrupted: partial results]"
	}
	fmt.Fprintln(&b, title)
	row := func(name, format string, args ...any) {
		fmt.Fprintf(&b, "  %-12s %s\n", name, fmt.Sprintf(format, args...))
	}
	failed := r.Attempted - r.Established
	row("connections", "%s established of %s attempted (%s failed)", group(r.Established), group(r.Attempted), group(failed))
	switch r.Mode {
	case ModeEcho, ModeSlow:
		row("load", "%d conns × %d in flight, %d B %s", r.Conns, r.Inflight, r.Size, r.Type)
		row("throughput", "%s msgs/s, %.1f MB/s (%s replies in %.2fs)", group(uint64(r.MsgsPerSec+0.5)), r.MBPerSec, group(r.Messages), r.Seconds)
		if r.PerServerCPUSec > 0 {
			row("efficiency", "%s msgs per second of server CPU", group(uint64(r.PerServerCPUSec+0.5)))
		}
	case ModeConnect:
		row("load", "%d workers: dial, upgrade, one %d B echo, close", r.Conns, r.Size)
		row("throughput", "%s connects/s (%s cycles in %.2fs)", group(uint64(r.ConnectsPerSec+0.5)), group(r.Messages), r.Seconds)
		if r.PerServerCPUSec > 0 {
			row("efficiency", "%s connects per second of server CPU", group(uint64(r.PerServerCPUSec+0.5)))
		}
		if r.Handshake != nil {
			row("handshake", "%s", r.Handshake)
		}
	case ModeIdle:
		row("held", "%s connections for %.1fs (ramp took %.1fs)", group(r.Held), r.Seconds, r.RampSeconds)
		if r.KernelSlabPerConnKiB != 0 {
			row("kernel", "slab memory %.2f KiB per connection (both ends, loopback)", r.KernelSlabPerConnKiB)
		}
	case ModePubSub:
		r.writePubSub(row)
	}
	if r.Latency != nil {
		name := "latency"
		if r.cycles() {
			name = "cycle"
		}
		row(name, "%s", r.Latency)
	}
	if r.Ignored > 0 {
		row("ignored", "%s server messages that were not replies", group(r.Ignored))
	}
	if r.ErrorCount == 0 {
		row("errors", "none")
	} else {
		row("errors", "%s (%.3g%% of operations)", group(r.ErrorCount), r.ErrorRatio*100)
		for _, e := range r.Errors {
			fmt.Fprintf(&b, "    %8s  %s", group(e.Count), e.Kind)
			if e.Example != "" {
				fmt.Fprintf(&b, "  e.g. %s", e.Example)
			}
			b.WriteByte('\n')
		}
	}
	if s := r.Slow; s != nil {
		row("slow", "%d clients wrote %s messages (%s writes refused: queue full)", s.Clients, group(s.Sent), group(s.QueueFull))
		if s.ClosedByServer > 0 {
			codes := make([]string, 0, len(s.CloseCodes))
			for code, n := range s.CloseCodes {
				codes = append(codes, fmt.Sprintf("%s×%d", code, n))
			}
			row("", "%d disconnected by the server (%s), first after %.1fs", s.ClosedByServer, strings.Join(codes, ", "), s.FirstCloseAfter)
		} else {
			row("", "none disconnected by the server")
		}
	}
	if p := r.Server; p != nil {
		row("server", "%s", p.describe())
	}
	if p := r.Generator; p != nil {
		row("generator", "%s", p.describe())
	}
	for _, n := range r.Notes {
		row("note", "%s", n)
	}
	io.WriteString(w, b.String())
}

// String formats the percentiles for the summary.
func (l *Latency) String() string {
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s",
		fmtUS(l.P50), fmtUS(l.P90), fmtUS(l.P99), fmtUS(l.P999), fmtUS(l.Max))
}

func (p *ProcStats) describe() string {
	var parts []string
	if p.PID != 0 {
		parts = append(parts, fmt.Sprintf("pid %d", p.PID))
	}
	if p.CPUPercent > 0 {
		parts = append(parts, fmt.Sprintf("CPU %.0f%% of a core", p.CPUPercent))
	}
	if p.RSSBeforeKiB > 0 || p.RSSAfterKiB > 0 {
		parts = append(parts, fmt.Sprintf("RSS %s → %s (peak %s)", fmtKiB(float64(p.RSSBeforeKiB)), fmtKiB(float64(p.RSSAfterKiB)), fmtKiB(float64(p.RSSPeakKiB))))
	}
	if p.RSSPerConnKiB != 0 {
		parts = append(parts, fmt.Sprintf("%.2f KiB per connection", p.RSSPerConnKiB))
	}
	return strings.Join(parts, ", ")
}

func fmtUS(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%.2fs", us/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%.2fms", us/1e3)
	default:
		return fmt.Sprintf("%.0fµs", us)
	}
}

func fmtKiB(k float64) string {
	if k >= 1024 {
		return fmt.Sprintf("%.1f MiB", k/1024)
	}
	return fmt.Sprintf("%.0f KiB", k)
}

// group formats n with thousands separators.
func group(n uint64) string {
	s := fmt.Sprint(n)
	if len(s) <= 3 {
		return s
	}
	var b strings.Builder
	pre := len(s) % 3
	if pre > 0 {
		b.WriteString(s[:pre])
	}
	for i := pre; i < len(s); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}

// writePubSub prints the pubsub part of the summary.
func (r *Report) writePubSub(row func(name, format string, args ...any)) {
	ps := r.PubSub
	if ps == nil {
		return
	}
	switch ps.Measure {
	case MeasureConnect:
		row("load", "%d workers: dial, connect, subscribe to %q, close", r.Conns, ps.Channel)
		row("throughput", "%s cycles/s (%s cycles in %.2fs)", group(uint64(r.ConnectsPerSec+0.5)), group(r.Messages), r.Seconds)
		if r.PerServerCPUSec > 0 {
			row("server cost", "%.1f µs of server CPU per cycle", r.ServerCPUPerOpUS)
		}
		if r.Handshake != nil {
			row("handshake", "%s", r.Handshake)
		}
		return
	case MeasureIdle:
		row("held", "%s subscribed connections on %q for %.1fs (ramp took %.1fs)", group(r.Held), ps.Channel, r.Seconds, r.RampSeconds)
		return
	}
	row("load", "%s subscribers on %q, %d B publications from the %s", group(uint64(ps.Subscribers)), ps.Channel, r.Size, ps.Publish)
	for i, st := range ps.Steps {
		verdict := "pass"
		if !st.Pass {
			verdict = "FAIL: " + st.Failure
		}
		if st.Behind != "" {
			verdict += " (" + st.Behind + ")"
		}
		if st.Warmup {
			verdict = "warmup, " + verdict
		}
		p99 := "-"
		if st.Latency != nil {
			p99 = fmtUS(st.Latency.P99)
		}
		mark := " "
		if i == ps.Best {
			mark = "*"
		}
		row(fmt.Sprintf("%sstep %d", mark, i+1), "offered %s/s → %s deliveries/s, p99 %s, server CPU %.0f%%  %s",
			group(uint64(st.OfferedPerSec+0.5)), group(uint64(st.DeliveriesPerSec+0.5)), p99, st.ServerCPU, verdict)
		for _, n := range st.Nodes {
			row("", "  pid %d: %.0f%% CPU, %.1f µs per publication", n.PID, n.CPUPercent, n.PerPublicationUS)
		}
	}
	if ps.Best < 0 {
		row("result", "no step passed")
		return
	}
	best := ps.Steps[ps.Best]
	what := "best lossless"
	if ps.Measure == MeasureRate {
		what = "measured"
	}
	row("throughput", "%s deliveries/s (%s step: %s publications to %s subscribers, %s delivered in %.2fs)",
		group(uint64(r.MsgsPerSec+0.5)), what, group(best.Publications), group(uint64(best.Subscribers)), group(best.Delivered), best.Seconds)
	if best.Lost+best.Duplicated+best.Reordered > 0 || best.Disconnected > 0 {
		row("losses", "%s lost, %s duplicated, %s out of order, %d subscribers disconnected",
			group(best.Lost), group(best.Duplicated), group(best.Reordered), best.Disconnected)
	}
	if best.Frames > 0 && best.Frames < best.Delivered {
		row("coalescing", "%.1f publications per WebSocket message", float64(best.Delivered)/float64(best.Frames))
	}
	if r.PerServerCPUSec > 0 {
		row("efficiency", "%s deliveries per second of server CPU", group(uint64(r.PerServerCPUSec+0.5)))
	}
	if ps.Late > 0 || ps.Reconnected > 0 || ps.PublisherReconnected > 0 {
		row("", "%s publications arrived after their step; %s subscribers and %s publishers reconnected after failed steps",
			group(ps.Late), group(ps.Reconnected), group(ps.PublisherReconnected))
	}
}
