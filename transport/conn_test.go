package transport

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// fakeWS models melody's session: a fixed queue of cap frames (a Write or
// CloseWithMsg into a full queue is what melody reports as
// ErrMessageBufferFull), written to the client when the test calls flush.
type fakeWS struct {
	cap      int
	queue    [][]byte // frames handed to melody, not yet written
	closes   []bool   // queue[i] is a close frame
	written  []string
	overfull int // writes into a full queue
	aborted  string
	abortC   chan string
	c        *Conn
	// closed makes every write fail, as melody's does once its session
	// closed.
	closed bool
}

func (f *fakeWS) push(msg []byte, close bool) error {
	if f.closed {
		return fmt.Errorf("session is closed")
	}
	if len(f.queue) >= f.cap {
		f.overfull++
		return fmt.Errorf("message buffer is full")
	}
	f.queue = append(f.queue, msg)
	f.closes = append(f.closes, close)
	return nil
}

func (f *fakeWS) Write(msg []byte) error        { return f.push(msg, false) }
func (f *fakeWS) CloseWithMsg(msg []byte) error { return f.push(msg, true) }
func (f *fakeWS) Abort(code int, reason string) {
	f.aborted = fmt.Sprint(code, " ", reason)
	if f.abortC != nil {
		f.abortC <- f.aborted
	}
}

// flush writes n queued frames, reporting each text frame as melody's
// HandleSentMessage does.
func (f *fakeWS) flush(n int) {
	for range n {
		if len(f.queue) == 0 {
			return
		}
		msg, isClose := f.queue[0], f.closes[0]
		f.queue, f.closes = f.queue[1:], f.closes[1:]
		if isClose {
			code, reason := "1005", ""
			if len(msg) >= 2 {
				code, reason = fmt.Sprint(int(msg[0])<<8|int(msg[1])), string(msg[2:])
			}
			f.written = append(f.written, "close "+code+" "+reason)
			continue
		}
		f.written = append(f.written, string(msg))
		f.c.sent(msg)
	}
}

func newTestConn(t *testing.T, sendBuffer, queueBytes int) (*Conn, *fakeWS) {
	hub := &Hub{opts: Options{SendBuffer: sendBuffer, SendQueueBytes: queueBytes, RateLimit: 100, RateBurst: 100, MaxInFlight: 4}}
	c := newConn(hub, nil, zerolog.New(zerolog.NewTestWriter(t)))
	ws := &fakeWS{cap: sendBuffer, c: c}
	c.ws = ws
	return c, ws
}

// A close follows every frame queued before it, through the same queue:
// with melody's queue full and an overflow waiting it neither overtakes the
// error frame it explains nor overfills melody's queue (which used to
// evict the client as a slow consumer, 4008).
func TestCloseFollowsQueuedFrames(t *testing.T) {
	c, ws := newTestConn(t, 2, 1<<20)
	c.Send([]byte("a"))
	c.Send([]byte("b")) // melody's queue is full
	c.Send([]byte("error frame"))
	c.Close(websocket.ClosePolicyViolation, "authentication failed")
	c.Send([]byte("after the close")) // dropped: the connection is closing
	if ws.overfull != 0 || ws.aborted != "" {
		t.Fatalf("close overfilled melody's queue (%d) or evicted (%q)", ws.overfull, ws.aborted)
	}
	ws.flush(10)
	want := []string{"a", "b", "error frame", "close 1008 authentication failed"}
	if strings.Join(ws.written, "|") != strings.Join(want, "|") {
		t.Fatalf("written %q, want %q", ws.written, want)
	}
	if c.hub.evicted.Load() != 0 {
		t.Fatal("counted as a slow consumer")
	}
}

// Close with code 0 sends a close frame without a status code (1005), as
// Directus does after a failed handshake.
func TestCloseWithoutStatus(t *testing.T) {
	c, ws := newTestConn(t, 4, 1<<20)
	c.Close(0, "")
	ws.flush(1)
	if len(ws.written) != 1 || ws.written[0] != "close 1005 " {
		t.Fatalf("written %q", ws.written)
	}
}

// The bytes waiting — in melody's queue as well as the overflow — are
// bounded by send_queue_bytes: a client that does not read is evicted once
// they would exceed it, even while melody's queue has room (a large answer
// used to bypass the bound that way).
func TestSendQueueBoundCountsMelodysQueue(t *testing.T) {
	c, ws := newTestConn(t, 16, 100)
	c.Send([]byte(strings.Repeat("x", 60)))
	c.Send([]byte(strings.Repeat("y", 30)))
	if ws.aborted != "" {
		t.Fatalf("evicted under the bound: %s", ws.aborted)
	}
	c.Send([]byte(strings.Repeat("z", 20))) // 110 bytes would wait
	if ws.aborted != fmt.Sprint(CloseSlowConsumer, " slow consumer: send queue full") || c.hub.evicted.Load() != 1 {
		t.Fatalf("aborted %q, evicted %d", ws.aborted, c.hub.evicted.Load())
	}
}

// A burst beyond melody's queue waits in the overflow and is written in
// order as the client reads; a single frame larger than the bound goes out
// when nothing else waits.
func TestSendOverflowKeepsOrder(t *testing.T) {
	c, ws := newTestConn(t, 2, 1000)
	for i := range 6 {
		c.Send(fmt.Appendf(nil, "f%d", i))
	}
	ws.flush(10)
	if strings.Join(ws.written, ",") != "f0,f1,f2,f3,f4,f5" || ws.aborted != "" {
		t.Fatalf("written %v aborted %q", ws.written, ws.aborted)
	}
	c.Send([]byte(strings.Repeat("L", 5000)))
	if ws.aborted != "" {
		t.Fatalf("a large frame with nothing waiting evicted: %s", ws.aborted)
	}
}

// A flood over the rate limit gets one RATE_LIMITED answer a second, not
// one per frame (a flood of answers); the frames are dropped.
func TestRateLimitAnswersOncePerSecond(t *testing.T) {
	c, ws := newTestConn(t, 1000, 1<<20)
	c.limiter = rate.NewLimiter(0, 1)
	answers := 0
	for i := range 100 {
		if c.Limited(func() []byte { answers++; return []byte("limited") }) != (i > 0) {
			t.Fatalf("frame %d: limited %v", i, i > 0)
		}
	}
	if answers != 1 || len(ws.queue) != 1 {
		t.Fatalf("%d answers, %d frames queued for 99 frames over the limit", answers, len(ws.queue))
	}
}

// panicking is a codec whose frame handler panics.
type panicking struct{ Codec }

func (panicking) Handle(Link, []byte) { panic("a bug in a frame handler") }

// A panic while handling a frame closes that connection (1011) and is
// counted; the process goes on.
func TestFramePanicContained(t *testing.T) {
	c, ws := newTestConn(t, 16, 1<<20)
	c.codec = panicking{}
	ws.abortC = make(chan string, 1)
	c.receive([]byte(`{"type":"ping"}`))
	select {
	case got := <-ws.abortC:
		if got != "1011 internal error" {
			t.Fatalf("closed with %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection was not closed")
	}
	if n := c.hub.stats.panics.Load(); n != 1 {
		t.Fatalf("%d panics counted", n)
	}
}

// A delivery that reaches a connection after it ended queues nothing: the
// send-queue gauge returns to zero (it used to keep such frames' bytes
// forever, as melody never reports them sent).
func TestSendAfterDisconnectKeepsNoBytes(t *testing.T) {
	c, ws := newTestConn(t, 4, 1<<20)
	c.Send([]byte("before"))
	c.dropQueued() // the disconnect handler
	ws.closed = true
	c.Send([]byte("late frame"))
	if got := c.hub.stats.queuedBytes.Load(); got != 0 {
		t.Fatalf("send queue gauge %d bytes after the connection ended", got)
	}
}

// A frame melody writes just as the connection ends is reported sent after
// the disconnect handler forgot it: the gauge must not count it twice (it
// went negative).
func TestSentAfterDisconnectCountsOnce(t *testing.T) {
	c, ws := newTestConn(t, 4, 1<<20)
	c.Send([]byte("in melody's queue"))
	c.dropQueued()
	ws.flush(1) // melody's writer reports it sent afterwards
	if got := c.hub.stats.queuedBytes.Load(); got != 0 {
		t.Fatalf("send queue gauge %d bytes after the connection ended", got)
	}
}

// A MultiFrame codec's frames joined by FrameSeparator go out as separate
// WebSocket messages, in order; other codecs' frames are sent as they are.
func TestMultiFrameSplits(t *testing.T) {
	c, ws := newTestConn(t, 8, 1<<20)
	joined := []byte("{\"a\":1}\x00{\"b\":2}\x00{\"c\":3}")
	c.Send(joined)
	c.multi = true
	c.Send(joined)
	ws.flush(10)
	want := "{\"a\":1}\x00{\"b\":2}\x00{\"c\":3}|{\"a\":1}|{\"b\":2}|{\"c\":3}"
	if got := strings.Join(ws.written, "|"); got != want {
		t.Fatalf("written %q, want %q", got, want)
	}
}
