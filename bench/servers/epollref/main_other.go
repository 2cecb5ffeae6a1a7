//go:build !linux

// Command epollref is the reference ceiling: a minimal WebSocket echo on one
// epoll loop. It needs Linux.
package main

import "log"

func main() { log.Fatal("epollref: needs Linux (epoll)") }
