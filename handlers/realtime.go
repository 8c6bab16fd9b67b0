package handlers

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// realtimeUpgrade serves Directus's own realtime protocol (placeholder).
func (s *Server) realtimeUpgrade(c echo.Context) error {
	return c.JSON(http.StatusNotImplemented, errorBody(&apiError{Status: 501, Code: "NOT_IMPLEMENTED", Message: "realtime protocol not implemented yet"}))
}
