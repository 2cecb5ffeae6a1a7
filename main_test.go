package wsgate_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every connection must have ended, and the engine's goroutines with it,
// when the tests finish.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
