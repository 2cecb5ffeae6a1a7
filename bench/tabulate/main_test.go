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
