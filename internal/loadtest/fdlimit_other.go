//go:build !unix

package loadtest

// fdLimit is unknown off Unix.
func fdLimit() (uint64, bool) { return 0, false }
