package loadtest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of CPU times in /proc/PID/stat. It is 100
// on every Linux architecture Go supports.
const clockTicks = 100

// procFile is a /proc file kept open, so that it can be read again even
// when the process has run out of file descriptors (a load generator that
// hits EMFILE should still be able to report the server's memory).
type procFile struct {
	f   *os.File
	buf []byte
}

func openProc(pid int, name string) (*procFile, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/%s", pid, name))
	if err != nil {
		return nil, err
	}
	return &procFile{f: f, buf: make([]byte, 4096)}, nil
}

// read returns the file's current contents.
func (p *procFile) read() ([]byte, error) {
	for {
		n, err := p.f.ReadAt(p.buf, 0)
		if n < len(p.buf) {
			if err != nil && err != io.EOF {
				return nil, err
			}
			return p.buf[:n], nil
		}
		p.buf = make([]byte, 2*len(p.buf))
	}
}

func (p *procFile) close() { p.f.Close() }

// proc reads a process's memory and CPU time from /proc.
type proc struct {
	pid    int
	status *procFile
	stat   *procFile
}

func openProcess(pid int) (*proc, error) {
	status, err := openProc(pid, "status")
	if err != nil {
		return nil, fmt.Errorf("reading pid %d: %w", pid, err)
	}
	stat, err := openProc(pid, "stat")
	if err != nil {
		status.close()
		return nil, fmt.Errorf("reading pid %d: %w", pid, err)
	}
	return &proc{pid: pid, status: status, stat: stat}, nil
}

func (p *proc) close() {
	p.status.close()
	p.stat.close()
}

// rss returns the process's VmRSS in KiB.
func (p *proc) rss() (int64, error) {
	b, err := p.status.read()
	if err != nil {
		return 0, fmt.Errorf("reading RSS of pid %d: %w", p.pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("reading RSS of pid %d: no VmRSS line (has it exited?)", p.pid)
}

// cpu returns the user+system CPU time the process has used.
func (p *proc) cpu() (time.Duration, error) {
	b, err := p.stat.read()
	if err != nil {
		return 0, fmt.Errorf("reading CPU time of pid %d: %w", p.pid, err)
	}
	// The command name (field 2) may contain spaces; fields resume after ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("reading CPU time of pid %d: malformed stat", p.pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After ')': state(3) ppid(4) … utime(14) stime(15), so index 11 and 12.
	if len(f) < 13 {
		return 0, fmt.Errorf("reading CPU time of pid %d: short stat", p.pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("reading CPU time of pid %d: malformed stat", p.pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// cpuMeter measures the share of a core a process used over a window.
type cpuMeter struct {
	p     *proc
	start time.Duration
	wall  time.Time
	ok    bool
}

func startCPU(p *proc) cpuMeter {
	if p == nil {
		return cpuMeter{}
	}
	t, err := p.cpu()
	return cpuMeter{p: p, start: t, wall: time.Now(), ok: err == nil}
}

// percent returns the CPU used since start, in percent of one core.
func (m cpuMeter) percent() float64 {
	if !m.ok {
		return 0
	}
	t, err := m.p.cpu()
	wall := time.Since(m.wall)
	if err != nil || wall <= 0 {
		return 0
	}
	return float64(t-m.start) / float64(wall) * 100
}

// slabKiB returns the kernel's slab memory (/proc/meminfo Slab) in KiB,
// or -1 when it cannot be read.
func slabKiB() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Slab:"); ok {
			v, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return -1
			}
			return v
		}
	}
	return -1
}
