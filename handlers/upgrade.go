package handlers

import (
	"time"

	"github.com/labstack/echo/v4"

	"github.com/directus-ws-broker/directus-ws-broker/config"
	"github.com/directus-ws-broker/directus-ws-broker/protocol/extension"
	"github.com/directus-ws-broker/directus-ws-broker/protocol/graphql"
	"github.com/directus-ws-broker/directus-ws-broker/protocol/realtime"
	"github.com/directus-ws-broker/directus-ws-broker/transport"
)

// serveProtocol upgrades the requests of a WebSocket endpoint: an invalid
// token is a 401 (never a silent downgrade to public), a missing one as
// the protocol decides, an unreachable Directus a 503 with Retry-After.
func (s *Server) serveProtocol(ep transport.Endpoint) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		// net/http's own writer: the request waits for the handshake on
		// another goroutine, and echo recycles its wrapper on return.
		refusal := s.hub.Accept(c.Response().Writer, r, c.RealIP(), ep.Open(r))
		if refusal == nil {
			return nil
		}
		if refusal.RetryAfter != "" {
			c.Response().Header().Set("Retry-After", refusal.RetryAfter)
		}
		return c.JSON(refusal.Err.Status, errorBody(refusal.Err))
	}
}

func hubOptions(cfg config.Config) transport.Options {
	return transport.Options{
		SendBuffer: cfg.SendBuffer, SendQueueBytes: cfg.SendQueueBytes, MaxFrameSize: cfg.MaxFrameSize,
		PingPeriod: cfg.PingPeriod, PongWait: cfg.PongWait, WriteWait: cfg.WriteWait,
		AllowedOrigins: cfg.AllowedOrigins, RateLimit: cfg.RateLimit, RateBurst: cfg.RateBurst,
		MaxInFlight: cfg.MaxInFlight, MaxConnections: cfg.MaxConnections,
	}
}

func extensionOptions(cfg config.Config) extension.Options {
	return extension.Options{
		MaxFrameSize: cfg.MaxFrameSize,
		Get:          cfg.WebsocketCoreGet, Post: cfg.WebsocketCorePost, Patch: cfg.WebsocketCorePatch,
		Delete: cfg.WebsocketCoreDelete, Subscribe: cfg.WebsocketCoreSubscribe,
		AuthGrace: cfg.AuthGrace, Public: cfg.WebsocketPublic,
	}
}

func graphqlOptions(cfg config.Config, src graphql.SchemaSource) graphql.Options {
	return graphql.Options{
		Mode: cfg.GraphQLAuthMode, InitTimeout: 3 * time.Second, AuthTimeout: cfg.GraphQLAuthTimeout,
		MaxFrameSize: cfg.MaxFrameSize, Schemas: src,
	}
}

func realtimeOptions(cfg config.Config) realtime.Options {
	return realtime.Options{
		Mode: cfg.RealtimeAuthMode, AuthTimeout: cfg.RealtimeAuthTimeout, PingPeriod: cfg.PingPeriod,
		MaxFrameSize: cfg.MaxFrameSize, AllowedOrigins: cfg.AllowedOrigins,
	}
}
