package loadtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sync/atomic"
)

// dialer opens TCP connections for wsgate.Dial, spreading them over
// loopback source addresses so that no single address runs out of
// ephemeral ports (about 28,000 per source address and destination).
type dialer struct {
	srcs []*net.TCPAddr
	next atomic.Uint64
}

// newDialer binds source addresses 127.0.0.2 … 127.0.0.(1+n) when the
// target host is a loopback address and n > 0.
func newDialer(rawURL string, n int) (*dialer, error) {
	d := &dialer{}
	if n <= 0 {
		return d, nil
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	ip := net.ParseIP(u.Hostname())
	if ip == nil || !ip.IsLoopback() || ip.To4() == nil {
		return d, nil // source addresses only make sense on IPv4 loopback
	}
	if n > 250 {
		return nil, fmt.Errorf("%w: -src-ips %d: at most 250", ErrUsage, n)
	}
	for i := 0; i < n; i++ {
		d.srcs = append(d.srcs, &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i))})
	}
	return d, nil
}

// dialContext has the signature of wsgate.Options.NetDialContext.
func (d *dialer) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	// No TCP keepalive: it costs four setsockopt calls per dial and a
	// benchmark over loopback has no dead peers to find.
	nd := net.Dialer{Control: bindAddressNoPort, KeepAlive: -1}
	if len(d.srcs) > 0 {
		nd.LocalAddr = d.srcs[d.next.Add(1)%uint64(len(d.srcs))]
	}
	return nd.DialContext(ctx, network, addr)
}

// srcIPsFor is the default -src-ips for conns simultaneous connections:
// enough addresses that none holds 24,000 or more.
func srcIPsFor(conns int) int {
	return max(1, (conns+23999)/24000)
}
