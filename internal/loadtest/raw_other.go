//go:build !linux

package loadtest

import (
	"context"
	"fmt"
)

func runRaw(context.Context, *Config, *Report) error {
	return fmt.Errorf("%w: -raw needs Linux (epoll)", ErrUsage)
}
