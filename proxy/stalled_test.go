package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stowage/stowage/proxy"
)

// TestStalledReadersAreCut reproduces "600 stalled readers made a
// 1024-descriptor server stop answering" at a smaller scale: clients that
// request a large cached blob and never read are cut once the idle-write
// deadline passes (their connections, and the files behind them, are
// released), and /healthz answers throughout.
func TestStalledReadersAreCut(t *testing.T) {
	const stalled = 20
	const size = 16 << 20
	e := newEnv(t, envOptions{})
	d := e.seedBlob("library/big:v1", size, 7)
	path := "/v2/library/big/blobs/" + d.String()
	warm := e.get(context.Background(), http.MethodGet, path, nil)
	_, _ = io.Copy(io.Discard, warm.Body)
	warm.Body.Close()

	var mu sync.Mutex
	open := map[net.Conn]bool{}
	srv := httptest.NewUnstartedServer(proxy.Serving(e.proxy, proxy.ServingOptions{WriteIdleTimeout: time.Second}))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch s {
		case http.StateActive:
			open[c] = true
		case http.StateClosed, http.StateHijacked:
			delete(open, c)
		}
	}
	srv.Start()
	defer srv.Close()
	active := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(open)
	}

	conns := make([]*net.TCPConn, 0, stalled)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range stalled {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		tc := c.(*net.TCPConn)
		_ = tc.SetReadBuffer(4096)
		conns = append(conns, tc)
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: stowage\r\n\r\n", path); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the stalled requests to be served", func() bool { return active() >= stalled })
	health := func() {
		t.Helper()
		c := &http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get(srv.URL + "/healthz")
		if err != nil {
			t.Fatalf("/healthz while readers stall: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/healthz while readers stall: status %d", resp.StatusCode)
		}
	}
	health()
	waitFor(t, "the stalled connections to be cut", func() bool {
		health()
		return active() == 0
	})
	// A stalled client that reads now finds its response cut short.
	_ = conns[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, conns[0])
	if n >= size {
		t.Fatalf("stalled reader got the whole blob (%d bytes, err %v); want a cut response", n, err)
	}
	health()
}
