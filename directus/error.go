package directus

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Error is an answer from Directus that was not a success, or the broker's
// own failure to get one (Status 503, code SERVICE_UNAVAILABLE).
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("directus: %d %s: %s", e.Status, e.Code, e.Message)
}

// ErrUnavailable is wrapped by errors for a Directus that could not be
// reached or did not answer in time.
var ErrUnavailable = errors.New("directus unreachable")

// AsError returns err's *Error, mapping transport failures to a 503.
func AsError(err error) *Error {
	var de *Error
	if errors.As(err, &de) {
		return de
	}
	return &Error{Status: http.StatusServiceUnavailable, Code: "SERVICE_UNAVAILABLE", Message: "Directus could not be reached or did not answer in time"}
}

// parseError reads Directus's {"errors":[{"message","extensions":{"code"}}]}.
func parseError(status int, body []byte) *Error {
	var env struct {
		Errors []struct {
			Message    string `json:"message"`
			Extensions struct {
				Code string `json:"code"`
			} `json:"extensions"`
		} `json:"errors"`
	}
	e := &Error{Status: status, Code: http.StatusText(status), Message: http.StatusText(status)}
	if json.Unmarshal(body, &env) == nil && len(env.Errors) > 0 {
		if env.Errors[0].Extensions.Code != "" {
			e.Code = env.Errors[0].Extensions.Code
		}
		if env.Errors[0].Message != "" {
			e.Message = env.Errors[0].Message
		}
	}
	return e
}
