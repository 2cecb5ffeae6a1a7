// Package wsgate is a WebSocket (RFC 6455, with RFC 7692 compression)
// connection that any number of goroutines may use at once.
//
// It keeps the shape of the classic "wrap a WebSocket" tutorial — a Conn
// with ReadMessage, WriteMessage and a Close that is safe to call many
// times — and fixes what such wrappers get wrong: writes after Close fail
// instead of vanishing, Close flushes and performs the closing handshake,
// binary stays binary, dead peers are detected by ping/pong, messages and
// queues are bounded, a slow peer never blocks anyone forever, cross-site
// pages cannot open sockets with a visitor's cookies, and invalid input
// closes the connection with the right status code.
//
// # Getting a connection
//
// Servers call Upgrade from an http.Handler; clients call Dial. Wrap adopts
// a net.Conn whose handshake was done elsewhere. All three take *Options:
// nil, or any zero field, means the documented default.
//
// # Two ways to receive
//
// Blocking: call Read or ReadMessage from as many goroutines as you like.
//
// Event-driven: set Options.OnMessage and the Conn calls it for each
// message on an internal event loop. On Linux a connection in this mode
// costs no goroutine while idle: sockets are served by one epoll loop per
// CPU, which is how one process holds tens of thousands of connections in
// a few KiB each. OnMessage must not block.
//
// # Concurrency
//
// Every method is safe for concurrent use. Close and CloseWithStatus never
// block; Done and Err report the end. No goroutine started for a
// connection outlives it, and the shared event loops stop when the last
// connection has finished.
//
// # Errors
//
// Operations on a closed connection fail with errors matching ErrClosed
// and net.ErrClosed. Err returns a *CloseError with the close code, the
// reason and, when the end was not a clean handshake, a cause such as
// ErrPingTimeout, ErrWriteTimeout, ErrSlowConsumer, ErrProtocol,
// ErrInvalidUTF8 or ErrMessageTooBig. CloseStatus extracts the code.
//
// See the examples for the tutorial's echo server written with wsgate.
package wsgate
