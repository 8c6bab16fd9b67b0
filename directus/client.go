package directus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
)

// Client calls the Directus REST API. Every call takes the token to use, so
// one client serves every connection with that connection's own rights.
type Client struct {
	base    *url.URL
	http    *http.Client
	observe Observer
	limit   *limiter
}

// Observer is told of every request the client makes: its kind (the
// Request's), its outcome (ok, denied: 401/403, not_found, client_error,
// server_error: 5xx, timeout, unavailable, shed: refused by the
// client limit, see Limit) and how long it took.
type Observer func(kind, outcome string, d time.Duration)

// Observe makes o see every request from now on (set it before use).
func (c *Client) Observe(o Observer) { c.observe = o }

// NewClient makes a client for the Directus at baseURL. Each call is bounded
// by timeout.
func NewClient(baseURL string, timeout time.Duration) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("directus url %q: must be an absolute http(s) URL", baseURL)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	// Many subscribers' reads go to one Directus: keep enough idle
	// connections that bursts reuse them instead of redialling.
	transport.MaxIdleConns = 256
	transport.MaxIdleConnsPerHost = 256
	return &Client{base: u, http: &http.Client{Timeout: timeout, Transport: transport}}, nil
}

// URL is the Directus base URL.
func (c *Client) URL() string { return c.base.String() }

// Request is one REST call.
type Request struct {
	Method string
	// Segments are the path segments, each escaped: a client-chosen
	// collection or id can never add a segment or climb out of its path.
	Segments []string
	Query    url.Values
	Body     any
	Token    string
	// Kind names what the request is for, for the metrics (read,
	// snapshot, check, auth, model, crud…); "other" when empty.
	Kind string
}

// Do performs r and returns the "data" member of the answer (nil for 204).
// A non-2xx answer is an *Error with Directus's status and code.
func (c *Client) Do(ctx context.Context, r Request) (json.RawMessage, error) {
	raw, err := c.DoRaw(ctx, r)
	if err != nil || raw == nil {
		return nil, err
	}
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, &Error{Status: http.StatusBadGateway, Code: "BAD_GATEWAY", Message: "Directus answered with invalid JSON"}
	}
	return env.Data, nil
}

// DoRaw performs r and returns the whole answer body.
func (c *Client) DoRaw(ctx context.Context, r Request) ([]byte, error) {
	if c.observe == nil {
		return c.limited(ctx, r)
	}
	start := time.Now()
	data, err := c.limited(ctx, r)
	kind := r.Kind
	if kind == "" {
		kind = "other"
	}
	c.observe(kind, outcome(err), time.Since(start))
	return data, err
}

// outcome classifies a request's result for the metrics.
func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	var de *Error
	if errors.Is(err, ErrBusy) {
		return "shed"
	}
	if errors.As(err, &de) && de.Code != "SERVICE_UNAVAILABLE" {
		switch {
		case de.Status == http.StatusUnauthorized || de.Status == http.StatusForbidden:
			return "denied"
		case de.Status == http.StatusNotFound:
			return "not_found"
		case de.Status >= 500:
			return "server_error"
		}
		return "client_error"
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) || strings.Contains(err.Error(), "timeout") {
		return "timeout"
	}
	if errors.As(err, &de) {
		return "server_error" // 502-504 from a proxy in front of Directus
	}
	return "unavailable"
}

// limited performs r within the client limit when a client caused it.
func (c *Client) limited(ctx context.Context, r Request) ([]byte, error) {
	if c.limit == nil || !clientCaused(ctx) {
		return c.do(ctx, r)
	}
	if err := c.limit.acquire(ctx); err != nil {
		return nil, err
	}
	defer c.limit.release()
	return c.do(ctx, r)
}

func (c *Client) do(ctx context.Context, r Request) ([]byte, error) {
	u := *c.base
	segs := make([]string, len(r.Segments))
	for i, s := range r.Segments {
		segs[i] = url.PathEscape(s)
	}
	u.RawPath = u.EscapedPath() + "/" + strings.Join(segs, "/")
	u.Path, _ = url.PathUnescape(u.RawPath)
	u.RawQuery = r.Query.Encode()
	var body io.Reader
	if r.Body != nil {
		b, err := json.Marshal(r.Body)
		if err != nil {
			return nil, fmt.Errorf("encode body: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("directus %s %s: %w", r.Method, u.Path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.Token != "" {
		req.Header.Set("Authorization", "Bearer "+r.Token)
	}
	if addr := broker.ClientAddr(ctx); addr != "" {
		// Directus (IP_TRUST_PROXY) then sees the client: its rate limits,
		// login throttling and policies' ip_access apply to it.
		req.Header.Set("X-Forwarded-For", addr)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("directus %s %s: %w: %w", r.Method, u.Path, ErrUnavailable, scrub(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("directus %s %s: %w: %w", r.Method, u.Path, ErrUnavailable, err)
	}
	if resp.StatusCode >= 300 {
		e := parseError(resp.StatusCode, data)
		if resp.StatusCode >= 502 && resp.StatusCode <= 504 && e.Code == http.StatusText(resp.StatusCode) {
			e.Code = "SERVICE_UNAVAILABLE"
		}
		return nil, e
	}
	if resp.StatusCode == http.StatusNoContent || len(data) == 0 {
		return nil, nil
	}
	return data, nil
}

// scrub drops the URL from transport errors: it may carry a query with a
// token in other deployments' logs, and callers already name the path.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("timeout")
	}
	return err
}

// Unavailable reports whether err means Directus could not be reached.
func Unavailable(err error) bool {
	if errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var de *Error
	return errors.Is(err, ErrBusy) || (errors.As(err, &de) && de.Code == "SERVICE_UNAVAILABLE")
}

// Health checks that Directus answers /server/health.
func (c *Client) Health(ctx context.Context) error {
	_, err := c.DoRaw(ctx, Request{Method: http.MethodGet, Segments: []string{"server", "health"}, Kind: "health"})
	return err
}
