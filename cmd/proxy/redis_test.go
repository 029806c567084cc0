package main

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
)

// hangingListener accepts TCP connections and never answers: a Redis that
// is partitioned or stopped (SIGSTOP), which a real one cannot be made
// into on demand.
type hangingListener struct {
	ln      net.Listener
	accepts atomic.Int32
	mu      sync.Mutex
	conns   []net.Conn
	done    chan struct{}
}

func newHangingListener(t *testing.T) *hangingListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hangingListener{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.accepts.Add(1)
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-h.done
		h.mu.Lock()
		for _, c := range h.conns {
			_ = c.Close()
		}
		h.mu.Unlock()
	})
	return h
}

// TestServeHangingRedis: with redis.addr on a server that accepts and
// never answers, a cold pull succeeds, the replica falls back to local
// coordination after one timeout (a circuit breaker, not a wait per blob),
// and /metrics says so.
func TestServeHangingRedis(t *testing.T) {
	upSrv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(upSrv.Close)
	dgst := pushRandom(t, upSrv, 64<<10, 4)
	h := newHangingListener(t)

	dir := t.TempDir()
	cfgFile := writeConfig(t, dir, fmt.Sprintf(`upstreams:
  docker.io:
    endpoints: [%q]
redis:
  addr: %s
  timeout: 200ms
log:
  level: error
`, upSrv.URL, h.ln.Addr()))
	addr := startServe(t, "--config", cfgFile, "--root", filepath.Join(dir, "cache"))
	pullImage(t, addr+"/team/app:v1", dgst)
	if h.accepts.Load() == 0 {
		t.Fatal("the proxy never contacted Redis")
	}

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"stowage_redis_breaker_trips_total 1", "stowage_redis_unavailable 1"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// Five blobs (config and four layers), one episode: the blobs after
	// the first were coordinated locally without asking Redis.
	if !strings.Contains(string(body), "stowage_redis_local_decisions_total") {
		t.Error("metrics lack stowage_redis_local_decisions_total")
	}
}
