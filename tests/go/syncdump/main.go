// syncdump: a test helper on Calico's own Typha client library (typha/pkg/syncclient).
//
// Live mode connects to a Typha (Calico's or ours), waits until the syncer reports in-sync and
// writes the key/value set it holds as JSON, the way a Calico component sees it: each update's
// key is re-rendered with model.KeyToDefaultPath and its value — already parsed by the client
// with model.ParseValue — is re-serialized with model.SerializeValue, next to the update's
// V3ResourceVersion, UpdateType and Revision.  Two Typhas that send the same meaning therefore
// dump the same bytes, whatever their own serialization.
//
// Reserialize mode (-reserialize FILE) runs a dump written by someone else (our msgpack client)
// through the same parse and re-serialize steps offline, so both sides are compared in Go's
// canonical form, and values Go cannot parse show up as errors.
//
// Built by scripts/build-peers.sh inside the Calico source tree (it is not a module of its own).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	log "github.com/sirupsen/logrus"
	v1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/projectcalico/calico/libcalico-go/lib/backend/api"
	"github.com/projectcalico/calico/libcalico-go/lib/backend/model"
	"github.com/projectcalico/calico/typha/pkg/discovery"
	"github.com/projectcalico/calico/typha/pkg/syncclient"
	"github.com/projectcalico/calico/typha/pkg/syncproto"
)

// Entry is one key of a dump.  Value is SerializeValue's output as a string (not always JSON:
// config values and flags are raw strings); nil for a key whose value did not parse.
type Entry struct {
	Key               string  `json:"key"`
	Value             *string `json:"value"`
	Revision          string  `json:"revision"`
	V3ResourceVersion string  `json:"v3_resource_version"`
	UpdateType        string  `json:"update_type"`
	Error             string  `json:"error,omitempty"`
}

// Dump is the whole file: entries sorted by key.
type Dump struct {
	SyncerType string  `json:"syncer_type"`
	Status     string  `json:"status"`
	KVs        []Entry `json:"kvs"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:5473", "Typha address host:port")
	syncerType := flag.String("type", "felix", "syncer type: felix, bgp, tunnel-ip-allocation, node-status")
	out := flag.String("out", "-", "output file (- for stdout); written atomically")
	hostname := flag.String("hostname", "syncdump", "hostname sent in the client hello")
	timeout := flag.Duration("timeout", 60*time.Second, "fail if not in sync (and sentinel seen) within this")
	sentinel := flag.String("sentinel", "", "also wait for this key before dumping: a barrier after churn when written after it, in a later datastore write")
	sentinelValue := flag.String("sentinel-value", "", "with -sentinel: wait until the key has this value")
	follow := flag.Bool("follow", false, "with -sentinel: keep running and dump again on each sentinel update")
	keyFile := flag.String("key-file", "", "TLS: client key")
	certFile := flag.String("cert-file", "", "TLS: client certificate")
	caFile := flag.String("ca-file", "", "TLS: CA that signed the server's certificate")
	serverCN := flag.String("server-cn", "", "TLS: expected server common name")
	serverURI := flag.String("server-uri", "", "TLS: expected server URI SAN")
	reserialize := flag.String("reserialize", "", "offline: parse and re-serialize this dump file instead of connecting")
	logLevel := flag.String("log-level", "warning", "logrus level for Calico's client library (to stderr)")
	flag.Parse()

	lvl, err := log.ParseLevel(*logLevel)
	if err != nil {
		fail("bad -log-level: %v", err)
	}
	log.SetLevel(lvl)
	log.SetOutput(os.Stderr)

	if *reserialize != "" {
		writeDump(*out, reserializeFile(*reserialize))
		return
	}

	cb := newCallbacks(*syncerType, *sentinel, *sentinelValue, *follow, *out)
	opts := &syncclient.Options{
		SyncerType:   syncproto.SyncerType(*syncerType),
		KeyFile:      *keyFile,
		CertFile:     *certFile,
		CAFile:       *caFile,
		ServerCN:     *serverCN,
		ServerURISAN: *serverURI,
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := syncclient.New(
		discovery.New(discovery.WithAddrOverride(*addr)),
		"syncdump", *hostname, "typha-py test helper", cb, opts,
	)
	if err := client.Start(ctx); err != nil {
		fail("connect: %v", err)
	}
	finished := make(chan struct{})
	go func() { client.Finished.Wait(); close(finished) }()

	deadline := time.After(*timeout)
	for {
		select {
		case <-cb.dumped:
			if !*follow {
				return
			}
			deadline = nil // following: the first dump met the deadline
		case <-finished:
			fail("connection to Typha ended (status %s, %d keys held)", cb.statusName(), cb.size())
		case <-deadline:
			fail("timed out after %v: status %s, %d keys held, sentinel seen: %v",
				*timeout, cb.statusName(), cb.size(), cb.sentinelSeen())
		}
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "syncdump: "+format+"\n", args...)
	os.Exit(1)
}

type callbacks struct {
	mu            sync.Mutex
	syncerType    string
	sentinel      string
	sentinelValue string
	follow        bool
	out           string
	status        api.SyncStatus
	kvs           map[string]Entry
	dumpedOnce    bool
	dumped        chan struct{}
}

func newCallbacks(syncerType, sentinel, sentinelValue string, follow bool, out string) *callbacks {
	return &callbacks{
		syncerType: syncerType, sentinel: sentinel, sentinelValue: sentinelValue,
		follow: follow, out: out, kvs: map[string]Entry{}, dumped: make(chan struct{}, 1024),
	}
}

func (c *callbacks) OnStatusUpdated(status api.SyncStatus) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status = status
	c.maybeDump(false)
}

func (c *callbacks) OnUpdates(updates []api.Update) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sentinelUpdated := false
	for _, u := range updates {
		e := entryFor(u)
		if u.Value == nil {
			// A deletion (or, logged by the client, a value it could not parse).
			delete(c.kvs, e.Key)
		} else {
			c.kvs[e.Key] = e
		}
		if e.Key == c.sentinel {
			sentinelUpdated = true
		}
	}
	c.maybeDump(sentinelUpdated)
}

// maybeDump writes the set once in sync (and the sentinel condition holds); when following, again
// on each later sentinel update.
func (c *callbacks) maybeDump(sentinelUpdated bool) {
	if c.status != api.InSync || !c.sentinelOK() {
		return
	}
	if c.dumpedOnce && !(c.follow && sentinelUpdated) {
		return
	}
	c.dumpedOnce = true
	d := Dump{SyncerType: c.syncerType, Status: c.status.String(), KVs: make([]Entry, 0, len(c.kvs))}
	for _, e := range c.kvs {
		d.KVs = append(d.KVs, e)
	}
	writeDump(c.out, d)
	c.dumped <- struct{}{}
}

func (c *callbacks) sentinelOK() bool {
	if c.sentinel == "" {
		return true
	}
	e, ok := c.kvs[c.sentinel]
	if !ok {
		return false
	}
	return c.sentinelValue == "" || (e.Value != nil && *e.Value == c.sentinelValue)
}

func (c *callbacks) sentinelSeen() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.kvs[c.sentinel]
	return ok
}

func (c *callbacks) statusName() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status.String()
}

func (c *callbacks) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.kvs)
}

// entryFor renders one update as Calico's own code would send it on: the key by its default
// path, the value by SerializeValue with the v3 resource version moved out of the object (as
// Typha's syncproto.SerializeUpdate does), so it is compared in its own field.
func entryFor(u api.Update) Entry {
	e := Entry{Revision: fmt.Sprint(u.Revision), UpdateType: u.UpdateType.String()}
	key, err := model.KeyToDefaultPath(u.Key)
	if err != nil {
		e.Key = fmt.Sprintf("%v", u.Key)
		e.Error = "KeyToDefaultPath: " + err.Error()
		return e
	}
	e.Key = key
	if u.Value == nil {
		return e
	}
	if obj, ok := u.Value.(v1.Object); ok {
		e.V3ResourceVersion = obj.GetResourceVersion()
		obj.SetResourceVersion("")
		defer obj.SetResourceVersion(e.V3ResourceVersion)
	}
	raw, err := model.SerializeValue(&u.KVPair)
	if err != nil {
		e.Error = "SerializeValue: " + err.Error()
		return e
	}
	s := string(raw)
	e.Value = &s
	return e
}

// reserializeFile parses each entry of a dump (values as their sender serialized them) the way
// syncproto's SerializedUpdate.ToUpdate does, then renders it like a live dump.
func reserializeFile(path string) Dump {
	raw, err := os.ReadFile(path)
	if err != nil {
		fail("read %s: %v", path, err)
	}
	var in Dump
	if err := json.Unmarshal(raw, &in); err != nil {
		fail("parse %s: %v", path, err)
	}
	out := Dump{SyncerType: in.SyncerType, Status: in.Status, KVs: make([]Entry, 0, len(in.KVs))}
	for _, src := range in.KVs {
		out.KVs = append(out.KVs, reserializeEntry(src))
	}
	return out
}

func reserializeEntry(src Entry) Entry {
	e := src
	e.Error = ""
	parsedKey := model.KeyFromDefaultPath(src.Key)
	if parsedKey == nil {
		e.Value = nil
		e.Error = "KeyFromDefaultPath: unparseable key"
		return e
	}
	var parsedValue any
	if src.Value != nil {
		v, err := model.ParseValue(parsedKey, []byte(*src.Value))
		if err != nil {
			e.Value = nil
			e.Error = "ParseValue: " + err.Error()
			return e
		}
		parsedValue = v
		if obj, ok := v.(v1.Object); ok {
			obj.SetResourceVersion(src.V3ResourceVersion)
		}
	}
	if k, ok := parsedKey.(model.LegacyKey); ok {
		parsedKey = k.Upgrade()
	}
	out := entryFor(api.Update{
		KVPair:     model.KVPair{Key: parsedKey, Value: parsedValue, Revision: src.Revision},
		UpdateType: parseUpdateType(src.UpdateType),
	})
	if src.Value != nil && out.Value == nil && out.Error == "" {
		out.Error = "value parsed to nil"
	}
	return out
}

func parseUpdateType(s string) api.UpdateType {
	for _, t := range []api.UpdateType{
		api.UpdateTypeKVUnknown, api.UpdateTypeKVNew, api.UpdateTypeKVUpdated, api.UpdateTypeKVDeleted,
	} {
		if t.String() == s {
			return t
		}
	}
	return api.UpdateTypeKVUnknown
}

func writeDump(path string, d Dump) {
	sort.Slice(d.KVs, func(i, j int) bool { return d.KVs[i].Key < d.KVs[j].Key })
	// Stdout gets one dump per line (several when following); a file gets an indented one.
	var data []byte
	var err error
	if path == "-" {
		data, err = json.Marshal(d)
	} else {
		data, err = json.MarshalIndent(d, "", "  ")
	}
	if err != nil {
		fail("encode dump: %v", err)
	}
	data = append(data, '\n')
	if path == "-" {
		if _, err := os.Stdout.Write(data); err != nil {
			fail("write stdout: %v", err)
		}
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".syncdump-*")
	if err != nil {
		fail("create temp file: %v", err)
	}
	if _, err := tmp.Write(data); err != nil {
		fail("write %s: %v", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		fail("close %s: %v", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		fail("rename to %s: %v", path, err)
	}
}
