package handlers

import "github.com/directus-ws-broker/directus-ws-broker/session"

// errorBody is the JSON of an HTTP error answer: {"error":{status,code,message}}.
// Errors become answers in one place, session.AsError.
func errorBody(e *session.Error) map[string]any {
	return map[string]any{"error": e}
}
