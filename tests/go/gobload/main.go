// gobload: N Calico Typha clients in one process against one Typha address.  It is the load
// generator of load/bench_vs_go.py, the same program for Calico's Typha and ours.
//
// Two kinds of client, both on Calico's own code:
//   - full (-full of them, default 2): typha/pkg/syncclient, exactly what Felix runs (gob decoding,
//     snappy decoder restart, model.ParseValue of every update);
//   - light (the rest): typha/pkg/syncproto directly: the same hello (without decoder restart, so
//     no compression), gob decoding of every message envelope and pongs, but the values stay
//     bytes.  syncclient for all of them would measure the clients, not the server: 100 full
//     clients on 20,000 endpoints take ~50 CPU-seconds to join on this 2-core machine, and
//     cannot keep up with 1,000 updates/s each (measured; the figures went invalid).
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
	"bytes"
	"context"
	"encoding/gob"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"net"
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
	index       int
	connectedAt atomic.Value // float64 wall time of the first accepted connection
	inSyncAt    atomic.Value // float64 wall time of the first InSync status
	updates     atomic.Int64 // every update received
	updatesSync atomic.Int64 // updates received after in-sync
	disconnects atomic.Int64
	inSync      atomic.Bool
	sampleProb  float64
	rng         *rand.Rand
	load        *loader
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

var stampMarker = []byte(`"stamp":"`)

// onKVs is the light client's OnUpdates: count, and sample stamps straight from the JSON bytes.
func (c *client) onKVs(kvs []syncproto.SerializedUpdate) {
	n := int64(len(kvs))
	c.updates.Add(n)
	if !c.inSync.Load() {
		return
	}
	c.updatesSync.Add(n)
	if c.sampleProb <= 0 {
		return
	}
	now := wall()
	for i := range kvs {
		if c.rng.Float64() >= c.sampleProb {
			continue
		}
		v := kvs[i].Value
		j := bytes.Index(v, stampMarker)
		if j < 0 {
			continue
		}
		v = v[j+len(stampMarker):]
		k := bytes.IndexByte(v, '"')
		if k < 0 {
			continue
		}
		if stamp, err := strconv.ParseFloat(string(v[:k]), 64); err == nil {
			c.load.addLatency((now - stamp) * 1000.0)
		}
	}
}

// lightSession is one connection of a light client, until it fails.
func (c *client) lightSession(conn net.Conn, syncerType, hostname string) error {
	enc := gob.NewEncoder(conn)
	dec := gob.NewDecoder(bufio.NewReaderSize(conn, 64<<10))
	hello := syncproto.MsgClientHello{
		Hostname: hostname, Version: "gobload", Info: "typha-py load client (light)",
		SyncerType: syncproto.SyncerType(syncerType), SupportsModernPolicyKeys: true,
	}
	if err := enc.Encode(syncproto.Envelope{Message: hello}); err != nil {
		return err
	}
	for {
		var env syncproto.Envelope
		if err := dec.Decode(&env); err != nil {
			return err
		}
		switch m := env.Message.(type) {
		case syncproto.MsgKVs:
			c.onKVs(m.KVs)
		case syncproto.MsgSyncStatus:
			c.OnStatusUpdated(m.SyncStatus)
		case syncproto.MsgPing:
			pong := syncproto.MsgPong{PingTimestamp: m.Timestamp, PongTimestamp: time.Now()}
			if err := enc.Encode(syncproto.Envelope{Message: pong}); err != nil {
				return err
			}
		case syncproto.MsgServerHello:
		case syncproto.MsgDecoderRestart:
			return fmt.Errorf("decoder restart sent to a client that did not offer it")
		}
	}
}

// runLight keeps one light client connected, like run.
func runLight(ctx context.Context, c *client, addr, syncerType, prefix string, retry time.Duration) {
	hostname := fmt.Sprintf("%s%d", prefix, c.index)
	for ctx.Err() == nil {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			time.Sleep(retry)
			continue
		}
		if c.connectedAt.Load() == nil {
			c.connectedAt.Store(wall())
		}
		err = c.lightSession(conn, syncerType, hostname)
		_ = conn.Close()
		if ctx.Err() == nil {
			log.WithError(err).Warn("light client connection ended")
			c.disconnects.Add(1)
			time.Sleep(retry)
		}
	}
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
	full := flag.Int("full", 2, "how many of them are full syncclient clients (the rest: light)")
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
	emit(enc, &outMu, map[string]any{"event": "started", "wall": wall(), "clients": *n, "full": min(*full, *n), "gomaxprocs": runtime.GOMAXPROCS(0)})
	for i, c := range clients {
		if i < *full {
			go run(ctx, c, *addr, *syncerType, *prefix, *retry)
		} else {
			go runLight(ctx, c, *addr, *syncerType, *prefix, *retry)
		}
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
