package testenv

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// RedisServer is a real redis-server process of one test, on a free
// loopback port, that the test may stop (SIGSTOP: it hangs), continue,
// kill and start again on the same port — faults the shared Redis on
// 127.0.0.1:6379 must not be put through.
type RedisServer struct {
	t    testing.TB
	Addr string
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

// StartRedisServer starts redis-server (installed by .ci/install.sh)
// without persistence. Without the binary the test is skipped, or fails
// in CI.
func StartRedisServer(t testing.TB) *RedisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis-server: %v", err)
		}
		t.Skipf("redis-server: %v", err)
	}
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	r := &RedisServer{t: t, port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	r.Start()
	t.Cleanup(r.Kill)
	return r
}

// Start (re)starts the server on its port and waits until it answers.
func (r *RedisServer) Start() {
	r.t.Helper()
	// Not bound to a context: Kill ends it (also a stopped one).
	cmd := exec.CommandContext(context.Background(), "redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no")
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.cmd, r.done = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(r.done)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if r.ping() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.t.Fatalf("redis-server on %s did not answer", r.Addr)
}

// ping sends PING and reads the answer, bounded.
func (r *RedisServer) ping() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", r.Addr)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	buf := make([]byte, 7)
	n, _ := c.Read(buf)
	return string(buf[:n]) == "+PONG\r\n"
}

// Stop makes the server hang (SIGSTOP): connections are accepted by the
// kernel and never answered.
func (r *RedisServer) Stop() { r.signal(syscall.SIGSTOP) }

// Cont resumes a stopped server.
func (r *RedisServer) Cont() { r.signal(syscall.SIGCONT) }

func (r *RedisServer) signal(s syscall.Signal) {
	r.t.Helper()
	if err := r.cmd.Process.Signal(s); err != nil {
		r.t.Fatalf("redis-server: %v: %v", s, err)
	}
}

// Kill ends the server (also a stopped one) and waits for it.
func (r *RedisServer) Kill() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGCONT)
	_ = r.cmd.Process.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case <-r.done:
	case <-ctx.Done():
		r.t.Errorf("redis-server %d did not exit", r.cmd.Process.Pid)
	}
	r.cmd = nil
}
