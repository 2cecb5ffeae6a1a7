package hub

import (
	"errors"
	"fmt"
)

// Error is a reply error a client receives for one request; the connection
// stays open. Codes 0–399 are the ones Centrifugo defines (the values
// below); applications use 400–1999.
type Error struct {
	Code      uint32
	Message   string
	Temporary bool // the same request may succeed later
}

func (e *Error) Error() string { return fmt.Sprintf("hub: error %d: %s", e.Code, e.Message) }

// Is matches errors with the same code, so errors.Is(err, ErrorBadRequest)
// holds for any *Error with code 107.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Reply errors, with Centrifugo's codes and messages.
var (
	ErrorInternal              = &Error{Code: 100, Message: "internal server error", Temporary: true}
	ErrorUnauthorized          = &Error{Code: 101, Message: "unauthorized"}
	ErrorUnknownChannel        = &Error{Code: 102, Message: "unknown channel"}
	ErrorPermissionDenied      = &Error{Code: 103, Message: "permission denied"}
	ErrorMethodNotFound        = &Error{Code: 104, Message: "method not found"}
	ErrorAlreadySubscribed     = &Error{Code: 105, Message: "already subscribed"}
	ErrorLimitExceeded         = &Error{Code: 106, Message: "limit exceeded"}
	ErrorBadRequest            = &Error{Code: 107, Message: "bad request"}
	ErrorNotAvailable          = &Error{Code: 108, Message: "not available"}
	ErrorTokenExpired          = &Error{Code: 109, Message: "token expired"}
	ErrorExpired               = &Error{Code: 110, Message: "expired"}
	ErrorTooManyRequests       = &Error{Code: 111, Message: "too many requests", Temporary: true}
	ErrorUnrecoverablePosition = &Error{Code: 112, Message: "unrecoverable position"}
)

// Disconnect is the reason a connection ends: the WebSocket close code and
// reason the client receives. Returned as an error (from a callback, or by
// the hub) it means "close the connection with this". Clients reconnect
// after codes 3000–3499 and 4000–4499, and stay away after 3500–3999 and
// 4500–4999. Reason must be at most 123 bytes.
type Disconnect struct {
	Code   uint32
	Reason string
}

func (d Disconnect) Error() string { return fmt.Sprintf("hub: disconnect %d: %s", d.Code, d.Reason) }

// Disconnects the hub sends, with Centrifugo's codes and reasons.
var (
	DisconnectConnectionClosed      = Disconnect{3000, "connection closed"}
	DisconnectShutdown              = Disconnect{3001, "shutdown"}
	DisconnectServerError           = Disconnect{3004, "internal server error"}
	DisconnectExpired               = Disconnect{3005, "connection expired"}
	DisconnectSubExpired            = Disconnect{3006, "subscription expired"}
	DisconnectSlow                  = Disconnect{3008, "slow"}
	DisconnectWriteError            = Disconnect{3009, "write error"}
	DisconnectInsufficientState     = Disconnect{3010, "insufficient state"}
	DisconnectForceReconnect        = Disconnect{3011, "force reconnect"}
	DisconnectNoPong                = Disconnect{3012, "no pong"}
	DisconnectTooManyRequests       = Disconnect{3013, "too many requests"}
	DisconnectInvalidToken          = Disconnect{3500, "invalid token"}
	DisconnectBadRequest            = Disconnect{3501, "bad request"}
	DisconnectStale                 = Disconnect{3502, "stale"}
	DisconnectForceNoReconnect      = Disconnect{3503, "force disconnect"}
	DisconnectConnectionLimit       = Disconnect{3504, "connection limit"}
	DisconnectChannelLimit          = Disconnect{3505, "channel limit"}
	DisconnectInappropriateProtocol = Disconnect{3506, "inappropriate protocol"}
	DisconnectPermissionDenied      = Disconnect{3507, "permission denied"}
	DisconnectNotAvailable          = Disconnect{3508, "not available"}
	DisconnectTooManyErrors         = Disconnect{3509, "too many errors"}
)

// Unsubscribe is why the server ended one subscription; the client gets it
// in an unsubscribe push and resubscribes after codes ≥ 2500.
type Unsubscribe struct {
	Code   uint32
	Reason string
}

// Unsubscribe codes, Centrifugo's.
var (
	UnsubscribeServer            = Unsubscribe{2000, "server unsubscribe"}
	UnsubscribeInsufficientState = Unsubscribe{2500, "insufficient state"}
	UnsubscribeExpired           = Unsubscribe{2501, "subscription expired"}
)

// Sentinel errors.
var (
	// ErrClosed is returned by hub operations after Shutdown.
	ErrClosed = errors.New("hub: closed")
	// ErrTokenExpired and ErrInvalidToken are what a TokenVerifier's errors
	// wrap; the hub answers them with ErrorTokenExpired and
	// DisconnectInvalidToken (or ErrorPermissionDenied for subscription
	// tokens), as Centrifugo does.
	ErrTokenExpired = errors.New("hub: token expired")
	ErrInvalidToken = errors.New("hub: invalid token")
	// ErrUnknownClient means no connection on this node has the given ID.
	ErrUnknownClient = errors.New("hub: unknown client")
)

// AsError returns the *Error or Disconnect err carries; any other error is
// an internal error.
func AsError(err error) (e *Error, d *Disconnect) {
	var de Disconnect
	if errors.As(err, &de) {
		return nil, &de
	}
	if errors.As(err, &e) {
		return e, nil
	}
	return ErrorInternal, nil
}
