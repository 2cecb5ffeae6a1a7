//go:build race

package wsgate

// raceEnabled: the race detector makes sync.Pool drop a share of what is
// put back, so allocation counts that rely on pools are not checked.
const raceEnabled = true
