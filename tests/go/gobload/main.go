// gobload: N Calico Typha clients in one process, each a full typha/pkg/syncclient connection
// (gob decoding and model.ParseValue of every update, as Felix does), against one Typha address.
// It is the load generator of load/bench_vs_go.py, the same program for Calico's Typha and ours.
//
// Why syncclient per connection and not syncproto directly: the figures must measure what a real
// Felix costs a server, and syncclient is what Felix runs; 500 of them in one Go process cost
// ~10 goroutines and a gob decoder each, which is affordable.
//
// Clients start at once and retry every -retry until the server accepts (so a client is already
// retrying when the server is exec'd: the cold-start measurement).  Each client records the wall
// time of its first connection, of in-sync, the updates received (before and after in-sync) and
// disconnects; in sync, a sample (-sample) of the updates carrying the writer's wall-clock stamp
// (annotation "stamp" of a WorkloadEndpoint, seconds as a decimal string) gives write → client
// latency.
//
// Protocol: JSON lines.  stdout gets {"event":"started"}, then {"event":"all_in_sync",...} once
// every client is in sync; on stdin, "report" answers one JSON line with every client's counters
// and the latency samples taken since the previous report, "quit" (or EOF) ends the program.
//
// Built by scripts/build-peers.sh inside the Calico source tree (it is not a module of its own).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	log "github.com/sirupsen/logrus"

	"github.com/projectcalico/calico/libcalico-go/lib/backend/api"
	"github.com/projectcalico/calico/libcalico-go/lib/backend/model"
	"github.com/projectcalico/calico/typha/pkg/discovery"
	"github.com/projectcalico/calico/typha/pkg/syncclient"
	"github.com/projectcalico/calico/typha/pkg/syncproto"
)

func wall() float64 { return float64(time.Now().UnixNano()) / 1e9 }

// client holds one connection's counters; the callbacks run on syncclient's goroutine.
type client struct {
	index        int
	connectedAt  atomic.Value // float64 wall time of the first accepted connection
	inSyncAt     atomic.Value // float64 wall time of the first InSync status
	updates      atomic.Int64 // every update received
	updatesSync  atomic.Int64 // updates received after in-sync
	disconnects  atomic.Int64
	inSync       atomic.Bool
	sampleProb   float64
	rng          *rand.Rand
	load         *loader
}

func (c *client) OnStatusUpdated(status api.SyncStatus) {
	if status == api.InSync && !c.inSync.Load() {
		c.inSyncAt.Store(wall())
		c.inSync.Store(true)
		c.load.oneInSync()
	}
}

func (c *client) OnUpdates(updates []api.Update) {
	n := int64(len(updates))
	c.updates.Add(n)
	if !c.inSync.Load() {
		return
	}
	c.updatesSync.Add(n)
	if c.sampleProb <= 0 {
		return
	}
	now := wall()
	for i := range updates {
		if c.rng.Float64() >= c.sampleProb {
			continue
		}
		wep, ok := updates[i].Value.(*model.WorkloadEndpoint)
		if !ok || wep == nil {
			continue
		}
		s, ok := wep.Annotations["stamp"]
		if !ok {
			continue
		}
		if stamp, err := strconv.ParseFloat(s, 64); err == nil {
			c.load.addLatency((now - stamp) * 1000.0)
		}
	}
}

type loader struct {
	mu        sync.Mutex
	latencies []float64
	remaining atomic.Int64
	allInSync chan struct{}
}

func (l *loader) addLatency(ms float64) {
	l.mu.Lock()
	l.latencies = append(l.latencies, ms)
	l.mu.Unlock()
}

func (l *loader) oneInSync() {
	if l.remaining.Add(-1) == 0 {
		close(l.allInSync)
	}
}

func (l *loader) takeLatencies() []float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.latencies
	l.latencies = nil
	return out
}

// run keeps one client connected: retry until accepted, then reconnect after a disconnect.
func run(ctx context.Context, c *client, addr, syncerType, prefix string, retry time.Duration) {
	for ctx.Err() == nil {
		sc := syncclient.New(
			discovery.New(discovery.WithAddrOverride(addr)),
			"gobload", fmt.Sprintf("%s%d", prefix, c.index), "typha-py load client", c,
			&syncclient.Options{SyncerType: syncproto.SyncerType(syncerType)},
		)
		if err := sc.Start(ctx); err != nil {
			time.Sleep(retry)
			continue
		}
		if c.connectedAt.Load() == nil {
			c.connectedAt.Store(wall())
		}
		sc.Finished.Wait()
		if ctx.Err() == nil {
			c.disconnects.Add(1)
			time.Sleep(retry)
		}
	}
}

type clientReport struct {
	Index       int      `json:"index"`
	ConnectedAt *float64 `json:"connected_at"`
	InSyncAt    *float64 `json:"in_sync_at"`
	Updates     int64    `json:"updates"`
	UpdatesSync int64    `json:"updates_in_sync"`
	Disconnects int64    `json:"disconnects"`
}

func optFloat(v atomic.Value) *float64 {
	if x, ok := v.Load().(float64); ok {
		return &x
	}
	return nil
}

func report(clients []*client, l *loader) map[string]any {
	out := make([]clientReport, len(clients))
	for i, c := range clients {
		out[i] = clientReport{
			Index: c.index, ConnectedAt: optFloat(c.connectedAt), InSyncAt: optFloat(c.inSyncAt),
			Updates: c.updates.Load(), UpdatesSync: c.updatesSync.Load(), Disconnects: c.disconnects.Load(),
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return map[string]any{
		"event": "report", "wall": wall(), "clients": out, "latencies_ms": l.takeLatencies(),
		"go_heap_bytes": ms.HeapAlloc, "gomaxprocs": runtime.GOMAXPROCS(0),
	}
}

func emit(enc *json.Encoder, mu *sync.Mutex, v any) {
	mu.Lock()
	defer mu.Unlock()
	if err := enc.Encode(v); err != nil {
		os.Exit(1)
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:5473", "Typha address host:port")
	n := flag.Int("clients", 100, "number of clients")
	syncerType := flag.String("type", "felix", "syncer type")
	prefix := flag.String("hostname-prefix", "gobload-", "client hostnames are prefix + index")
	retry := flag.Duration("retry", 20*time.Millisecond, "pause between connection attempts")
	sample := flag.Float64("sample", 0.01, "probability that an in-sync update is a latency sample")
	logLevel := flag.String("log-level", "error", "logrus level for Calico's client library (stderr)")
	flag.Parse()

	lvl, err := log.ParseLevel(*logLevel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gobload: bad -log-level: %v\n", err)
		os.Exit(2)
	}
	log.SetLevel(lvl)
	log.SetOutput(os.Stderr)

	l := &loader{allInSync: make(chan struct{})}
	l.remaining.Store(int64(*n))
	clients := make([]*client, *n)
	for i := range clients {
		clients[i] = &client{index: i, sampleProb: *sample, rng: rand.New(rand.NewSource(int64(i) + 1)), load: l}
	}
	enc := json.NewEncoder(os.Stdout)
	var outMu sync.Mutex
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	emit(enc, &outMu, map[string]any{"event": "started", "wall": wall(), "clients": *n, "gomaxprocs": runtime.GOMAXPROCS(0)})
	for _, c := range clients {
		go run(ctx, c, *addr, *syncerType, *prefix, *retry)
	}
	go func() {
		<-l.allInSync
		emit(enc, &outMu, map[string]any{"event": "all_in_sync", "wall": wall()})
	}()

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch strings.TrimSpace(in.Text()) {
		case "report":
			emit(enc, &outMu, report(clients, l))
		case "quit":
			return
		}
	}
}
