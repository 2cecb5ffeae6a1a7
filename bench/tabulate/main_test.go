package main

import (
	"strings"
	"testing"
)

func TestTables(t *testing.T) {
	in := `
{"mode":"echo","label":"gorilla echo-100x64","seconds":10,"messages":1000000,"msgs_per_sec":100000,"server":{"pid":1,"cpu_percent":100}}
{"mode":"echo","label":"gorilla echo-100x64","seconds":10,"messages":1200000,"msgs_per_sec":120000,"server":{"pid":1,"cpu_percent":100}}
{"mode":"echo","label":"gorilla echo-100x64","seconds":10,"messages":1100000,"msgs_per_sec":110000,"server":{"pid":1,"cpu_percent":100}}
{"mode":"echo","label":"wsgate echo-100x64","seconds":10,"messages":1320000,"msgs_per_sec":132000,"per_server_cpu_sec":140000}
{"mode":"echo","label":"epollref echo-100x64","seconds":10,"messages":1200000,"msgs_per_sec":120000}
{"mode":"idle","label":"wsgate idle","server":{"pid":1,"rss_per_conn_kib":1.5}}
{"mode":"idle","label":"nbio idle","server":{"pid":1,"rss_per_conn_kib":1.0}}
`
	reports, err := decode(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	m := medians(reports)
	if got := m["gorilla"]["echo-100x64"]; got.Median != 110000 || got.Min != 100000 || got.Max != 120000 || got.PerCPU != 110000 {
		t.Errorf("gorilla summary %+v", got)
	}
	var b strings.Builder
	writeMarkdown(&b, Results{Medians: m})
	out := b.String()
	for _, want := range []string{
		"| gorilla | 110k (100k–120k) |",
		"| **wsgate** ÷ best peer | **1.20 gorilla** |",
		"| **wsgate** ÷ epollref | **1.10** |",
		"**1.50 nbio**", // RSS: 1.5 KiB against nbio's 1.0
	} {
		if !strings.Contains(out, want) {
			t.Errorf("tables lack %q:\n%s", want, out)
		}
	}
}

func TestBadLabel(t *testing.T) {
	if _, err := decode(strings.NewReader(`{"label":"nocase"}`)); err == nil {
		t.Error("a label without a case was accepted")
	}
}

func TestPubSubTables(t *testing.T) {
	in := `
{"mode":"pubsub","label":"centrifugo pubsub-max-n1000-s64","seconds":5,"messages":4000000,"msgs_per_sec":800000,"latency_us":{"p99":20000},"per_server_cpu_sec":900000,"server":{"pid":1,"cpu_percent":90},"generator":{"pid":2,"cpu_percent":70}}
{"mode":"pubsub","label":"centrifugo pubsub-max-n1000-s64","seconds":5,"messages":5000000,"msgs_per_sec":1000000,"latency_us":{"p99":30000},"per_server_cpu_sec":1000000}
{"mode":"pubsub","label":"nbio-hub pubsub-max-n1000-s64","seconds":5,"messages":500000,"msgs_per_sec":100000}
{"mode":"pubsub","label":"wsgate pubsub-max-n1000-s64","seconds":5,"messages":6000000,"msgs_per_sec":1200000}
{"mode":"pubsub","label":"centrifugo pubsub-p99-n10000-r50000","latency_us":{"p99":200000}}
{"mode":"pubsub","label":"nbio-hub pubsub-p99-n10000-r50000","latency_us":{"p99":100000}}
{"mode":"pubsub","label":"wsgate pubsub-p99-n10000-r50000","latency_us":{"p99":50000}}
{"mode":"pubsub","label":"centrifugo pubsub-idle-n19000","server":{"pid":1,"rss_per_conn_kib":47.6}}
{"mode":"pubsub","label":"nbio-hub pubsub-idle-n19000","server":{"pid":1,"rss_per_conn_kib":1.2}}
{"mode":"pubsub","label":"centrifugo pubsub-connect","connects_per_sec":9000,"per_server_cpu_sec":10000}
{"mode":"echo","label":"gorilla echo-100x64","seconds":10,"messages":1000000,"msgs_per_sec":100000}
`
	reports, err := decode(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	writeMarkdown(&b, Results{Medians: medians(reports)})
	out := b.String()
	for _, want := range []string{
		"| server | deliveries/s, N=1,000 × 64 B | p99 at 50k deliveries/s, N=10,000 | RSS per idle subscribed conn (19,000) | connect+subscribe, µs of server CPU | connect+subscribe cycles/s |",
		"| centrifugo | 900k (800k–1000k) | 200.0 ms | 48 KiB | 100 | 9.0k |",
		"| **wsgate** ÷ best peer | **1.33 centrifugo** | **0.50 nbio-hub** | – | – | – |",
		"| centrifugo | pubsub-max-n1000-s64 | 950k | 25.0 ms | 90% | 70% |",
		"| gorilla | 100k |", // the echo matrix is still there
	} {
		if !strings.Contains(out, want) {
			t.Errorf("tables lack %q:\n%s", want, out)
		}
	}
}

func TestMemoryTables(t *testing.T) {
	in := `
{"mode":"idle","label":"wsgate mem-plain-n19000","kernel_slab_per_conn_kib":8,"server":{"pid":1,"rss_per_conn_kib":1.0}}
{"mode":"idle","label":"wsgate mem-plain-n19000","kernel_slab_per_conn_kib":9,"server":{"pid":1,"rss_per_conn_kib":1.2}}
{"mode":"idle","label":"wsgate mem-plain-n19000","kernel_slab_per_conn_kib":10,"server":{"pid":1,"rss_per_conn_kib":1.1}}
{"mode":"idle","label":"nbio mem-plain-n19000","kernel_slab_per_conn_kib":8,"server":{"pid":1,"rss_per_conn_kib":1.0}}
{"mode":"idle","label":"nbio mem-plain-n5000","kernel_slab_per_conn_kib":8,"server":{"pid":1,"rss_per_conn_kib":2.0}}
{"mode":"idle","label":"gws mem-deflate-n19000","kernel_slab_per_conn_kib":8,"server":{"pid":1,"rss_per_conn_kib":20}}
{"mode":"idle","label":"wsgate mem-deflate-n19000","kernel_slab_per_conn_kib":8,"server":{"pid":1,"rss_per_conn_kib":2}}
`
	reports, err := decode(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	writeMarkdown(&b, Results{Medians: medians(reports)})
	out := b.String()
	for _, want := range []string{
		"| server | never used, 5,000 conns | never used, 19,000 conns | deflate, after traffic, 19,000 conns |",
		"| **wsgate** | – | **1.10 KiB (1.00–1.20)** | **2.00 KiB** |",
		"| **wsgate ÷ lowest other** | – | **1.10** nbio | **0.10** gws |",
		"| **wsgate** | – | **9.00 KiB** | **8.00 KiB** |", // kernel slab, medians
	} {
		if !strings.Contains(out, want) {
			t.Errorf("tables lack %q:\n%s", want, out)
		}
	}
}
