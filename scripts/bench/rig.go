package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// sizes are the scenario parameters; -quick swaps in smaller ones.
type sizes struct {
	fanoutSubs   []int // scenario 1
	fanoutEvents int   // events per run and size (plus warm-up)

	steadySubs, steadyColls, steadyRate int // scenario 2
	steadyDur                           time.Duration

	idleConns []int // scenario 3

	ingestSubs, ingestColls int // scenario 4
	ingestDur               time.Duration
	ingestSenders           int // concurrent keep-alive senders (Connection: close uses half)

	slowSubs, slowRate, slowItemBytes int // scenario 5
	slowBase, slowDur                 time.Duration

	vsSubs   []int // scenario 6
	vsWrites []int // writes timed at each size

	redisSubs   int // scenario 7: split over two instances, then on one
	redisEvents int // events per run and setup (plus warm-up)

	// scenario 8: classUsers users per role (classRoles roles) for the
	// one-role figures, all of them for the 10-role figure; events timed
	// with classes, before them (one read per user) and with the owner
	// rule; REST writes against Directus realtime; the storm's size.
	classUsers, classRoles                      int
	classEvents, classBeforeEvents, classWrites int
	// clusterRate events/s for clusterDur: scenario 10's open loop.
	clusterRate           int
	clusterDur            time.Duration
	stormSubs, stormUsers int

	writeSubs, writeWrites int // scenario 9: the larger size, and writes per size
}

var defaultSizes = sizes{
	fanoutSubs: []int{1000, 10000}, fanoutEvents: 30,
	steadySubs: 10000, steadyColls: 100, steadyRate: 1000, steadyDur: 10 * time.Second,
	idleConns:  []int{1000, 19000},
	ingestSubs: 1000, ingestColls: 100, ingestDur: 3 * time.Second, ingestSenders: 32,
	// ~16 KB frames at 40/s: 660 KB/s per subscriber, so a stopped one fills
	// the ~4 MB send buffer the kernel grows for it and the broker's queue
	// in about 8 s.
	slowSubs: 1000, slowRate: 40, slowItemBytes: 8192, slowBase: 4 * time.Second, slowDur: 12 * time.Second,
	vsSubs: []int{1000, 5000}, vsWrites: []int{5, 3},
	redisSubs: 10000, redisEvents: 30,
	classUsers: 1000, classRoles: 10, classEvents: 20, classBeforeEvents: 3, classWrites: 15,
	clusterRate: 10, clusterDur: 10 * time.Second,
	stormSubs: 10000, stormUsers: 1000,
	writeSubs: 100, writeWrites: 15,
}

var quickSizes = sizes{
	fanoutSubs: []int{100, 1000}, fanoutEvents: 10,
	steadySubs: 1000, steadyColls: 10, steadyRate: 200, steadyDur: 2 * time.Second,
	idleConns:  []int{200, 1000},
	ingestSubs: 200, ingestColls: 100, ingestDur: time.Second, ingestSenders: 16,
	slowSubs: 200, slowRate: 64, slowItemBytes: 16384, slowBase: 2 * time.Second, slowDur: 6 * time.Second,
	vsSubs: []int{100, 300}, vsWrites: []int{2, 2},
	redisSubs: 1000, redisEvents: 10,
	classUsers: 50, classRoles: 10, classEvents: 3, classBeforeEvents: 2, classWrites: 2,
	clusterRate: 10, clusterDur: 5 * time.Second, // the holder sets are reread once a second: a few rereads to count
	stormSubs: 500, stormUsers: 50,
	// Above the default max_connections_per_user (64), so the quick run
	// fails if scenario 9's broker lost the bench's limits.
	writeSubs: 70, writeWrites: 3,
}

// subscriberToken is the token of the broker's subscribers. With the stub
// any token passes; with reads proxied to the real Directus it must be the
// admin's (every subscriber in one identity group: one read per event).
const subscriberToken = "admin-token"

// rig is one broker and its Directus stub, fresh for each scenario so
// that CPU and memory figures start from zero.
type rig struct {
	stub, broker *proc
}

// startRig starts the stub with stubArgs and the broker pointed at it, with
// extra broker settings as KEY=VALUE.
func (b *bench) startRig(ctx context.Context, stubArgs []string, brokerEnv ...string) (*rig, error) {
	stub, err := startProc(ctx, "stub", b.self, append([]string{"stub"}, stubArgs...), nil, b.work)
	if err != nil {
		return nil, err
	}
	broker, err := b.startBroker(ctx, "broker", stub, brokerEnv...)
	if err != nil {
		stub.stop()
		return nil, err
	}
	return &rig{stub: stub, broker: broker}, nil
}

// startBroker starts a broker named name pointed at stub, with extra
// settings as KEY=VALUE (later ones win).
func (b *bench) startBroker(ctx context.Context, name string, stub *proc, brokerEnv ...string) (*proc, error) {
	env := append(baseBrokerEnv("http://"+stub.addr), brokerEnv...)
	// The broker runs in a scratch directory: no ./config.yaml to pick up.
	return startProc(ctx, name, b.broker, nil, env, b.work)
}

// baseBrokerEnv is every benchmark broker's environment, pointed at
// directusURL; settings appended after it win.
func baseBrokerEnv(directusURL string) []string {
	return []string{
		"LISTEN_ADDR=127.0.0.1:0",
		"DIRECTUS_URL=" + directusURL,
		"WEBHOOK_SECRET=" + webhookSecret,
		"LOG_LEVEL=warn",
		"LOG_FORMAT=json",
		"MAX_CONNECTIONS=20000",
		// Every client uses one token: no per-user or per-address bound.
		"MAX_CONNECTIONS_PER_USER=0", "MAX_ANONYMOUS_PER_ADDRESS=0",
		"MAX_QUERIES_PER_USER=0", "MAX_QUERIES_PER_CONNECTION=0",
		// One token for everyone: validate it once per scenario.
		"TOKEN_CACHE_TTL=1h",
		"CONFIG_FILE=",
		// The caller's shell must not choose the bus (scenario 7 sets it).
		"BUS=memory",
	}
}

func (r *rig) stop() {
	r.broker.stop()
	r.stub.stop()
}

func (r *rig) wsURL() string      { return "ws://" + r.broker.addr + "/websocket" }
func (r *rig) webhookURL() string { return "http://" + r.broker.addr + "/webhook" }

// setProxy switches the stub between answering item reads itself and
// proxying them to the real Directus.
func (r *rig) setProxy(on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	resp, err := http.Post("http://"+r.stub.addr+"/_bench/proxy?on="+v, "", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// metric reads one of the broker's metrics.
func (r *rig) metric(name string) (float64, error) {
	m, err := metrics(r.broker.addr)
	if err != nil {
		return 0, err
	}
	v, ok := m[name]
	if !ok {
		return 0, fmt.Errorf("metrics: no %s", name)
	}
	return v, nil
}

// collections names n collections prefix_0 ... prefix_{n-1}.
func collections(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + "_" + strconv.Itoa(i)
	}
	return out
}

// brokerCounts is the broker's own view of what it did, logged next to the
// bench's counts when they disagree.
func (r *rig) brokerCounts() string {
	m, err := metrics(r.broker.addr)
	if err != nil {
		return "metrics: " + err.Error()
	}
	return fmt.Sprintf("broker: published %.0f, dispatched %.0f, reads %.0f (errors %.0f), frames sent %.0f, missed %.0f, evicted %.0f, connections %.0f",
		m["broker_events_published_total"], m["broker_events_dispatched_total"], m["broker_reads_total"], m["broker_read_errors_total"],
		m["broker_frames_sent_total"], m["broker_events_missed_total"], m["broker_slow_consumers_evicted_total"], m["broker_connections"])
}
