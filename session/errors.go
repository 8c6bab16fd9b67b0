package session

import (
	"errors"
	"net/http"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// Error is an operation's failure as a client may see it: a status, a
// stable code and a message that is safe to show (never internal error
// text, tokens or item data).
type Error struct {
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Message string `json:"message"`
	cause   error
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Unwrap is the sentinel the error stands for, if any.
func (e *Error) Unwrap() error { return e.cause }

// Invalid is a 400 INVALID_PAYLOAD with msg.
func Invalid(msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "INVALID_PAYLOAD", Message: msg}
}

// The broker's own refusals.
var (
	ErrInvalidCollection = &Error{Status: http.StatusForbidden, Code: "INVALID_COLLECTION",
		Message: "The provided collection does not exists or is not accessible."}
	ErrTooManySubscriptions = &Error{Status: http.StatusTooManyRequests, Code: "LIMIT_EXCEEDED",
		Message: "too many subscriptions on this connection"}
	ErrResponseTooLarge = &Error{Status: http.StatusRequestEntityTooLarge, Code: "RESPONSE_TOO_LARGE",
		Message: "the answer exceeds send_queue_bytes; ask for fewer items or fields (limit, fields)"}
	ErrConnectionClosing = &Error{Status: http.StatusServiceUnavailable, Code: "SERVICE_UNAVAILABLE",
		Message: "the connection is closing"}
	ErrInvalidCredentials = &Error{Status: http.StatusUnauthorized, Code: "INVALID_CREDENTIALS",
		Message: "Directus refused the token"}
	ErrTokenExpired = &Error{Status: http.StatusUnauthorized, Code: "TOKEN_EXPIRED",
		Message: "the token expired or was revoked: authenticate again"}
)

// AsError maps any error of an operation to what the client may see; it is
// the one place where errors become answers, for both protocols and the
// webhook.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var de *directus.Error
	if errors.As(err, &de) {
		return &Error{Status: de.Status, Code: de.Code, Message: de.Message}
	}
	if errors.Is(err, broker.ErrTokenExpired) {
		return ErrTokenExpired
	}
	if directus.Unavailable(err) {
		return &Error{Status: http.StatusServiceUnavailable, Code: "SERVICE_UNAVAILABLE", Message: "Directus could not be reached or did not answer in time"}
	}
	if errors.Is(err, broker.ErrDetached) {
		return ErrConnectionClosing
	}
	if errors.Is(err, broker.ErrBusUnavailable) {
		return &Error{Status: http.StatusServiceUnavailable, Code: "SERVICE_UNAVAILABLE", Message: "the broker cannot serve this now; retry"}
	}
	return &Error{Status: http.StatusInternalServerError, Code: "INTERNAL", Message: "internal error"}
}
