package handlers

import (
	"errors"
	"net/http"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// apiError is an error as clients see it: a status, a stable code and a
// message that is safe to show (never internal error text or tokens).
type apiError struct {
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func badRequest(msg string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: "INVALID_PAYLOAD", Message: msg}
}

// toAPIError maps any error to what a client may see; it is the one place
// where errors become answers.
func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var de *directus.Error
	if errors.As(err, &de) {
		return &apiError{Status: de.Status, Code: de.Code, Message: de.Message}
	}
	if directus.Unavailable(err) {
		return &apiError{Status: http.StatusServiceUnavailable, Code: "SERVICE_UNAVAILABLE", Message: "Directus could not be reached or did not answer in time"}
	}
	if errors.Is(err, broker.ErrBusUnavailable) {
		return &apiError{Status: http.StatusServiceUnavailable, Code: "SERVICE_UNAVAILABLE", Message: "the broker cannot serve this now; retry"}
	}
	return &apiError{Status: http.StatusInternalServerError, Code: "INTERNAL", Message: "internal error"}
}
