//go:build !linux

// Command tcpecho is a plain TCP echo on one epoll loop. It needs Linux.
package main

import "log"

func main() { log.Fatal("tcpecho: needs Linux (epoll)") }
