// gobcheck is a test-time oracle for typha-py's gob codec, built on Calico's own syncproto
// and syncclient packages (never shipped; see docs/protocol.md, "Calico's protocol").
//
//	gobcheck serve                   JSON requests on stdin, one per line, answers on stdout:
//	  {"op":"decode_server","segments":[b64...]}
//	      decodes a server->client stream as Calico's client does: segment 0 with a plain
//	      gob decoder; every segment but the last must end exactly with a MsgDecoderRestart,
//	      whose CompressionAlgorithm selects the reader (snappy or plain) of the next segment,
//	      read by a fresh gob decoder. Answers {"ok":true,"messages":[...]}.
//	  {"op":"encode_client","messages":[...]}
//	      encodes client messages (MsgClientHello, MsgPong, MsgACK) with ONE gob encoder, as
//	      Calico's client does (types defined lazily). Answers {"ok":true,"bytes":b64,"ends":[...]}.
//	  {"op":"decode_client","segments":[b64]}
//	      decodes a client->server stream as Go Typha's server does (one gob decoder, Envelope
//	      after Envelope). Answers {"ok":true|false,"messages":[...],"error":...}: the messages
//	      decoded before the first error, if any.
//	gobcheck client ADDR TYPE [plain] [restart]
//	      runs Calico's syncclient against ADDR; prints {"status":N} and {"updates":[...]}
//	      lines (values re-serialized by libcalico-go) until killed. With "restart" its
//	      callbacks are restart-aware, as Felix's are: after a lost connection it prints
//	      {"restarted":true} and reconnects; without, it prints {"finished":true} and exits.
//
// It is built inside an unpacked Calico source tree (it imports Calico's packages and uses
// Calico's go.mod): scripts/build-peers.sh puts it at /opt/typha-peers/bin/gobcheck. By hand:
// copy this folder into the tree as typhapy-gobcheck/, then run there
// `CGO_ENABLED=0 go build -o /opt/typha-peers/bin/gobcheck ./typhapy-gobcheck`.
// The tests find it there or at $TYPHA_GOBCHECK.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/golang/snappy"
	log "github.com/sirupsen/logrus"

	"github.com/projectcalico/calico/libcalico-go/lib/backend/api"
	"github.com/projectcalico/calico/libcalico-go/lib/backend/model"
	"github.com/projectcalico/calico/typha/pkg/discovery"
	"github.com/projectcalico/calico/typha/pkg/syncclient"
	"github.com/projectcalico/calico/typha/pkg/syncproto"
)

type request struct {
	Op       string            `json:"op"`
	Segments [][]byte          `json:"segments"`
	Messages []json.RawMessage `json:"messages"`
}

type response struct {
	OK       bool             `json:"ok"`
	Error    string           `json:"error,omitempty"`
	Messages []map[string]any `json:"messages,omitempty"`
	Bytes    []byte           `json:"bytes,omitempty"`
	Ends     []int            `json:"ends,omitempty"`
}

func main() {
	log.SetLevel(log.WarnLevel)
	log.SetOutput(os.Stderr)
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gobcheck serve | gobcheck client ADDR TYPE [plain] [restart]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve()
	case "client":
		if len(os.Args) < 4 {
			fmt.Fprintln(os.Stderr, "usage: gobcheck client ADDR TYPE [plain] [restart]")
			os.Exit(2)
		}
		flags := map[string]bool{}
		for _, a := range os.Args[4:] {
			flags[a] = true
		}
		runClient(os.Args[2], os.Args[3], flags["plain"], flags["restart"])
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
}

func serve() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 256<<20)
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	for in.Scan() {
		var req request
		var resp response
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			resp.Error = "bad request: " + err.Error()
		} else {
			switch req.Op {
			case "decode_server":
				resp = decodeServer(req.Segments)
			case "encode_client":
				resp = encodeClient(req.Messages)
			case "decode_client":
				if len(req.Segments) == 1 {
					resp = decodeClient(req.Segments[0])
				} else {
					resp.Error = "decode_client takes one segment"
				}
			default:
				resp.Error = "unknown op " + req.Op
			}
		}
		_ = enc.Encode(resp)
		_ = out.Flush()
	}
}

// decodeServer reads each segment to its end with a fresh decoder, as the client does after a restart.
func decodeServer(segments [][]byte) (resp response) {
	compression := syncproto.CompressionAlgorithm("")
	for i, seg := range segments {
		var r io.Reader = bytes.NewReader(seg)
		if compression == syncproto.CompressionSnappy {
			r = snappy.NewReader(r)
		}
		dec := gob.NewDecoder(r)
		restarted := false
		for {
			var env syncproto.Envelope
			err := dec.Decode(&env)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				resp.Error = fmt.Sprintf("segment %d: %v", i, err)
				return
			}
			if restarted {
				resp.Error = fmt.Sprintf("segment %d: data after MsgDecoderRestart", i)
				return
			}
			m, err := describe(env.Message)
			if err != nil {
				resp.Error = fmt.Sprintf("segment %d: %v", i, err)
				return
			}
			resp.Messages = append(resp.Messages, m)
			if dr, ok := env.Message.(syncproto.MsgDecoderRestart); ok {
				restarted = true
				compression = dr.CompressionAlgorithm
			}
		}
		if !restarted && i < len(segments)-1 {
			resp.Error = fmt.Sprintf("segment %d ended without MsgDecoderRestart", i)
			return
		}
	}
	resp.OK = true
	return
}

func goTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

func describe(msg any) (map[string]any, error) {
	switch m := msg.(type) {
	case syncproto.MsgServerHello:
		return map[string]any{"type": "MsgServerHello", "Version": m.Version,
			"SyncerType": string(m.SyncerType), "SupportsNodeResourceUpdates": m.SupportsNodeResourceUpdates,
			"ServerConnID": m.ServerConnID}, nil
	case syncproto.MsgDecoderRestart:
		return map[string]any{"type": "MsgDecoderRestart", "Message": m.Message,
			"CompressionAlgorithm": string(m.CompressionAlgorithm)}, nil
	case syncproto.MsgSyncStatus:
		return map[string]any{"type": "MsgSyncStatus", "SyncStatus": int(m.SyncStatus)}, nil
	case syncproto.MsgPing:
		return map[string]any{"type": "MsgPing", "Timestamp": goTime(m.Timestamp)}, nil
	case syncproto.MsgKVs:
		kvs := make([]map[string]any, 0, len(m.KVs))
		for _, kv := range m.KVs {
			var value any
			if kv.Value != nil {
				value = kv.Value // base64 in JSON
			}
			rev, ok := kv.Revision.(string)
			if kv.Revision != nil && !ok {
				return nil, fmt.Errorf("revision of type %T", kv.Revision)
			}
			var revision any
			if kv.Revision != nil {
				revision = rev
			}
			kvs = append(kvs, map[string]any{"Key": kv.Key, "Value": value, "Revision": revision,
				"V3ResourceVersion": kv.V3ResourceVersion, "TTL": int64(kv.TTL), "UpdateType": int(kv.UpdateType)})
		}
		return map[string]any{"type": "MsgKVs", "KVs": kvs}, nil
	case nil:
		return nil, errors.New("nil message")
	}
	return nil, fmt.Errorf("unexpected server message %T", msg)
}

func goTimeParts(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	// Seconds since year 1, as on the wire (adding back what Unix() subtracted undoes any
	// int64 wrap-around for times far from now).
	return []int64{t.Unix() + 62135596800, int64(t.Nanosecond())}
}

func decodeClient(data []byte) (resp response) {
	r := bytes.NewReader(data)
	dec := gob.NewDecoder(r)
	for {
		var env syncproto.Envelope
		left := r.Len()
		err := dec.Decode(&env)
		if errors.Is(err, io.EOF) && left == 0 {
			break
		}
		if errors.Is(err, io.EOF) {
			// gob returns a bare EOF when the stream ends inside an interface's type
			// definitions; Go Typha then closes the connection as if the client had.
			resp.Error = "EOF inside a message"
			return
		}
		if err != nil {
			resp.Error = err.Error()
			return
		}
		var m map[string]any
		switch msg := env.Message.(type) {
		case syncproto.MsgClientHello:
			algs := []string{}
			for _, a := range msg.SupportedCompressionAlgorithms {
				algs = append(algs, strings.ToValidUTF8(string(a), "\uFFFD"))
			}
			m = map[string]any{"type": "MsgClientHello",
				"Hostname":                       strings.ToValidUTF8(msg.Hostname, "\uFFFD"),
				"Info":                           strings.ToValidUTF8(msg.Info, "\uFFFD"),
				"Version":                        strings.ToValidUTF8(msg.Version, "\uFFFD"),
				"SyncerType":                     strings.ToValidUTF8(string(msg.SyncerType), "\uFFFD"),
				"SupportsDecoderRestart":         msg.SupportsDecoderRestart,
				"SupportedCompressionAlgorithms": algs,
				"SupportsModernPolicyKeys":       msg.SupportsModernPolicyKeys,
				"ClientConnID":                   msg.ClientConnID}
		case syncproto.MsgPong:
			m = map[string]any{"type": "MsgPong", "PingTimestamp": goTimeParts(msg.PingTimestamp),
				"PongTimestamp": goTimeParts(msg.PongTimestamp)}
		case syncproto.MsgACK:
			m = map[string]any{"type": "MsgACK"}
		case nil:
			m = map[string]any{"type": "nil"}
		default:
			m = map[string]any{"type": fmt.Sprintf("%T", msg)}
		}
		resp.Messages = append(resp.Messages, m)
	}
	resp.OK = true
	return
}

type clientMsg struct {
	Type                           string   `json:"type"`
	Hostname                       string   `json:"Hostname"`
	Info                           string   `json:"Info"`
	Version                        string   `json:"Version"`
	SyncerType                     string   `json:"SyncerType"`
	SupportsDecoderRestart         bool     `json:"SupportsDecoderRestart"`
	SupportedCompressionAlgorithms []string `json:"SupportedCompressionAlgorithms"`
	SupportsModernPolicyKeys       bool     `json:"SupportsModernPolicyKeys"`
	ClientConnID                   uint64   `json:"ClientConnID"`
	PingTimestamp                  *int64   `json:"PingTimestamp"`
	PongTimestamp                  *int64   `json:"PongTimestamp"`
}

func fromNanos(n *int64) time.Time {
	if n == nil {
		return time.Time{}
	}
	return time.Unix(0, *n).UTC()
}

func encodeClient(raw []json.RawMessage) (resp response) {
	var buf bytes.Buffer
	enc := gob.NewEncoder(&buf)
	for _, r := range raw {
		var m clientMsg
		if err := json.Unmarshal(r, &m); err != nil {
			resp.Error = err.Error()
			return
		}
		var msg any
		switch m.Type {
		case "MsgClientHello":
			var algs []syncproto.CompressionAlgorithm
			for _, a := range m.SupportedCompressionAlgorithms {
				algs = append(algs, syncproto.CompressionAlgorithm(a))
			}
			msg = syncproto.MsgClientHello{Hostname: m.Hostname, Info: m.Info, Version: m.Version,
				SyncerType: syncproto.SyncerType(m.SyncerType), SupportsDecoderRestart: m.SupportsDecoderRestart,
				SupportedCompressionAlgorithms: algs, SupportsModernPolicyKeys: m.SupportsModernPolicyKeys,
				ClientConnID: m.ClientConnID}
		case "MsgPong":
			msg = syncproto.MsgPong{PingTimestamp: fromNanos(m.PingTimestamp), PongTimestamp: fromNanos(m.PongTimestamp)}
		case "MsgACK":
			msg = syncproto.MsgACK{}
		default:
			resp.Error = "cannot encode " + m.Type
			return
		}
		if err := enc.Encode(syncproto.Envelope{Message: msg}); err != nil {
			resp.Error = err.Error()
			return
		}
		resp.Ends = append(resp.Ends, buf.Len())
	}
	resp.OK = true
	resp.Bytes = buf.Bytes()
	return
}

// --- client mode ---------------------------------------------------------------------------

type printer struct {
	mu  sync.Mutex
	out *json.Encoder
}

func (p *printer) print(v any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.out.Encode(v)
}

func (p *printer) OnStatusUpdated(status api.SyncStatus) {
	p.print(map[string]any{"status": int(status)})
}

func (p *printer) OnUpdates(updates []api.Update) {
	out := make([]map[string]any, 0, len(updates))
	for _, u := range updates {
		key, err := model.KeyToDefaultPath(u.Key)
		if err != nil {
			key = fmt.Sprintf("unserializable key %v", u.Key)
		}
		var value any
		if u.Value != nil {
			raw, err := model.SerializeValue(&u.KVPair)
			if err != nil {
				value = map[string]any{"error": err.Error()}
			} else {
				value = string(raw)
			}
		}
		out = append(out, map[string]any{"key": key, "value": value, "revision": u.Revision,
			"updateType": int(u.UpdateType)})
	}
	p.print(map[string]any{"updates": out})
}

// restartPrinter makes the client restart-aware (syncclient reconnects only for such callbacks).
type restartPrinter struct{ *printer }

func (r restartPrinter) OnTyphaConnectionRestarted() {
	r.print(map[string]any{"restarted": true})
}

func runClient(addr, syncerType string, plain, restart bool) {
	p := &printer{out: json.NewEncoder(os.Stdout)}
	var callbacks api.SyncerCallbacks = p
	if restart {
		callbacks = restartPrinter{p}
	}
	opts := &syncclient.Options{SyncerType: syncproto.SyncerType(syncerType), DisableDecoderRestart: plain}
	d := discovery.New(discovery.WithAddrOverride(addr))
	client := syncclient.New(d, "gobcheck", "gobcheck-node", "typha-py gob oracle", callbacks, opts)
	if err := client.Start(context.Background()); err != nil {
		p.print(map[string]any{"error": err.Error()})
		os.Exit(1)
	}
	client.Finished.Wait()
	p.print(map[string]any{"finished": true})
}
