package wsgate

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
)

// Sentinel errors. Test for them with errors.Is; the errors returned by the
// library wrap them with context.
var (
	// ErrClosed is returned by operations on a connection that has been
	// closed or is closing. It wraps net.ErrClosed, so
	// errors.Is(err, net.ErrClosed) holds as well.
	ErrClosed = &wrapErr{msg: "wsgate: connection closed", err: net.ErrClosed}

	// ErrMessageTooBig means a message exceeded Options.ReadLimit; the
	// connection was closed with 1009.
	ErrMessageTooBig = errors.New("wsgate: message too big")

	// ErrInvalidUTF8 means a text message or close reason was not valid
	// UTF-8. Received, it closes the connection with 1007; on a write, the
	// message is rejected and the connection stays open.
	ErrInvalidUTF8 = errors.New("wsgate: invalid UTF-8 in text")

	// ErrProtocol means the peer broke RFC 6455; the connection was closed
	// with 1002.
	ErrProtocol = errors.New("wsgate: protocol error")

	// ErrPingTimeout means no frame arrived within PingTimeout of a ping:
	// the peer or the path to it is dead.
	ErrPingTimeout = errors.New("wsgate: ping timeout")

	// ErrWriteTimeout means queued data made no progress for WriteTimeout:
	// the peer stopped reading.
	ErrWriteTimeout = errors.New("wsgate: write timeout")

	// ErrSlowConsumer means the send queue overflowed under PolicyClose; the
	// connection was closed with 1008.
	ErrSlowConsumer = errors.New("wsgate: slow consumer")

	// ErrQueueFull means a write was rejected under PolicyDropNewest, or a
	// PolicyBlock write gave up waiting for room.
	ErrQueueFull = errors.New("wsgate: send queue full")

	// ErrEventMode is returned by Read and ReadMessage on a connection whose
	// messages go to Options.OnMessage.
	ErrEventMode = errors.New("wsgate: messages are delivered to OnMessage")

	// ErrHandlerPanic means a callback (Options.OnOpen or OnMessage)
	// panicked; the connection was closed with 1011 and the panic value is
	// in the error's text.
	ErrHandlerPanic = errors.New("wsgate: callback panicked")

	// ErrMessageTimeout means an incoming message did not complete within
	// MessageTimeout; the connection was closed with 1008.
	ErrMessageTimeout = errors.New("wsgate: message timeout")

	// ErrMemoryBudget means the connection was closed (1008 or 1009) to
	// keep the connections sharing its Budget within the limit.
	ErrMemoryBudget = errors.New("wsgate: memory budget exceeded")

	// ErrEngine means the connection could not be given a transport: the
	// event loops could not start, or the process is out of file
	// descriptors. Upgrade answers 503 before the handshake completes.
	ErrEngine = errors.New("wsgate: cannot serve the connection")

	// ErrInternal means a bug in wsgate ended the connection; the panic
	// value is in the error's text. Only that connection is affected.
	ErrInternal = errors.New("wsgate: internal error")

	// ErrOriginNotAllowed means Upgrade refused the request's Origin.
	ErrOriginNotAllowed = errors.New("wsgate: origin not allowed")

	// ErrBadHandshake means the opening handshake was malformed or refused.
	ErrBadHandshake = errors.New("wsgate: bad handshake")
)

// errEOF is the cause when the peer's TCP connection ended without a
// closing handshake.
var errEOF = fmt.Errorf("connection closed without a close frame: %w", io.ErrUnexpectedEOF)

type wrapErr struct {
	msg string
	err error
}

func (e *wrapErr) Error() string { return e.msg }
func (e *wrapErr) Unwrap() error { return e.err }

// StatusCode is a close status code (RFC 6455 section 7.4).
type StatusCode int

// Close status codes. 1005, 1006 and 1015 are never sent on the wire: they
// report a close without a status, an abnormal close without a close frame,
// and a TLS failure.
const (
	StatusNormalClosure           StatusCode = 1000
	StatusGoingAway               StatusCode = 1001
	StatusProtocolError           StatusCode = 1002
	StatusUnsupportedData         StatusCode = 1003
	StatusNoStatusRcvd            StatusCode = 1005
	StatusAbnormalClosure         StatusCode = 1006
	StatusInvalidFramePayloadData StatusCode = 1007
	StatusPolicyViolation         StatusCode = 1008
	StatusMessageTooBig           StatusCode = 1009
	StatusMandatoryExtension      StatusCode = 1010
	StatusInternalError           StatusCode = 1011
	StatusServiceRestart          StatusCode = 1012
	StatusTryAgainLater           StatusCode = 1013
	StatusBadGateway              StatusCode = 1014
	StatusTLSHandshake            StatusCode = 1015
)

// String returns the code's number and name.
func (s StatusCode) String() string {
	name := ""
	switch s {
	case StatusNormalClosure:
		name = "normal closure"
	case StatusGoingAway:
		name = "going away"
	case StatusProtocolError:
		name = "protocol error"
	case StatusUnsupportedData:
		name = "unsupported data"
	case StatusNoStatusRcvd:
		name = "no status"
	case StatusAbnormalClosure:
		name = "abnormal closure"
	case StatusInvalidFramePayloadData:
		name = "invalid payload data"
	case StatusPolicyViolation:
		name = "policy violation"
	case StatusMessageTooBig:
		name = "message too big"
	case StatusMandatoryExtension:
		name = "mandatory extension"
	case StatusInternalError:
		name = "internal error"
	case StatusServiceRestart:
		name = "service restart"
	case StatusTryAgainLater:
		name = "try again later"
	case StatusBadGateway:
		name = "bad gateway"
	case StatusTLSHandshake:
		name = "TLS handshake failure"
	}
	if name == "" {
		return strconv.Itoa(int(s))
	}
	return strconv.Itoa(int(s)) + " (" + name + ")"
}

// validWireCode reports whether code may appear in a close frame.
func validWireCode(code StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003:
		return true
	case code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// CloseError tells why a connection ended. Conn.Err returns one once the
// connection is done; write and read errors after the end wrap one too.
// Use errors.As to get it, or CloseStatus for just the code.
type CloseError struct {
	// Code is the close code the peer sent (Remote) or that this side sent.
	// StatusAbnormalClosure (1006) means no close frame was exchanged: the
	// TCP connection broke, the peer died, or the connection was cut.
	Code StatusCode
	// Reason is the close frame's reason text, if any.
	Reason string
	// Remote is true when the peer started the close.
	Remote bool
	// Err is the cause when the close was not a clean handshake started by
	// either side: ErrPingTimeout, ErrWriteTimeout, ErrSlowConsumer,
	// ErrProtocol, ErrInvalidUTF8, ErrMessageTooBig, or an I/O error.
	Err error
}

// Error describes the close.
func (e *CloseError) Error() string {
	who := "local"
	if e.Remote {
		who = "peer"
	}
	s := "wsgate: connection closed by " + who + ": " + e.Code.String()
	if e.Reason != "" {
		s += " " + strconv.Quote(e.Reason)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *CloseError) Unwrap() error { return e.Err }

// CloseStatus returns the close code of the *CloseError in err's chain,
// or -1 when there is none.
func CloseStatus(err error) StatusCode {
	var ce *CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return -1
}

// closedErr is what operations return after the end: it matches ErrClosed
// and net.ErrClosed, and unwraps to the CloseError that says why.
type closedErr struct {
	op    string
	cause error
}

func (e *closedErr) Error() string {
	if e.cause == nil {
		return "wsgate: " + e.op + ": connection closed"
	}
	return "wsgate: " + e.op + ": " + e.cause.Error()
}

func (e *closedErr) Is(target error) bool { return target == ErrClosed || target == net.ErrClosed }
func (e *closedErr) Unwrap() error        { return e.cause }
