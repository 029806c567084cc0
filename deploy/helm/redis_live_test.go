package helm

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/stowage/stowage/proxy/cluster"
)

// kubeVarRef is a $(NAME) reference the kubelet expands in args.
var kubeVarRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expandArgs expands $(NAME) in args from env, as the kubelet does.
func expandArgs(t *testing.T, args []string, env map[string]string) []string {
	t.Helper()
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = kubeVarRef.ReplaceAllStringFunc(a, func(ref string) string {
			name := kubeVarRef.FindStringSubmatch(ref)[1]
			v, ok := env[name]
			if !ok {
				t.Fatalf("arg %q refers to $(%s), which the container's env does not define", a, name)
			}
			return v
		})
	}
	return out
}

// secretEnv resolves the env vars of c that come from the rendered Secrets.
func secretEnv(t *testing.T, r *rendered, c corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			continue
		}
		ref := e.ValueFrom.SecretKeyRef
		s := decodeAs[*corev1.Secret](t, r.find(t, "Secret", ref.Name))
		v, ok := s.Data[ref.Key]
		if !ok || s.Name != ref.Name {
			t.Fatalf("env %s: Secret %s has no key %s", e.Name, ref.Name, ref.Key)
		}
		env[e.Name] = string(v)
	}
	return env
}

// TestChartRedisOnARealServer runs redis-server with the arguments the
// chart renders (the password expanded from its Secret as the kubelet
// does) and connects to it the way Stowage does: the binary's own Redis
// client, with the password from the environment variable the rendered
// config names, as the pod's env provides it. A client without the
// password is refused, nothing is persisted, and the eviction settings
// are the chart's.
func TestChartRedisOnARealServer(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis-server: %v", err)
		}
		t.Skipf("redis-server: %v", err)
	}
	r := mustRender(t, multiReplicaFile, nil)
	_, rc := redisPod(t, r)
	args := expandArgs(t, rc.Args, secretEnv(t, r, rc))

	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	dir := t.TempDir() // stands for the pod's /data
	// Loopback only, and the test's own port and directory; later
	// arguments win over the chart's.
	args = append(args, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "redis-server", args...)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		<-exited
	})

	cfg := renderedConfig(t, r)
	stowageEnv := secretEnv(t, r, container(t, serverPod(t, r).Spec, "stowage"))
	password, ok := stowageEnv[cfg.Redis.PasswordEnv]
	if cfg.Redis.PasswordEnv == "" || !ok {
		t.Fatalf("config redis.password_env %q: the pod's env has no such variable from a Secret", cfg.Redis.PasswordEnv)
	}
	// cfg.Redis.Addr is the Service's name, which resolves in the cluster.
	c := cluster.NewRedisClient(addr, password, cfg.Redis.DB, cfg.Redis.Timeout)
	defer c.Close()
	for i := 0; ; i++ {
		err := c.Ping(ctx).Err()
		if err == nil {
			break
		}
		if i == 100 || ctx.Err() != nil {
			t.Fatalf("redis-server with the chart's args %q does not answer: %v\n%s", args, err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := c.SetNX(ctx, cfg.RedisPrefix()+"fill:probe", "owner http://10.0.0.1:5001", time.Minute).Err(); err != nil {
		t.Fatalf("lease-like SET NX: %v", err)
	}

	anon := cluster.NewRedisClient(addr, "", 0, cfg.Redis.Timeout)
	defer anon.Close()
	if err := anon.Get(ctx, cfg.RedisPrefix()+"fill:probe").Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("a client without the password: %v, want NOAUTH", err)
	}

	want := map[string]string{"save": "", "appendonly": "no", "maxmemory": strconv.Itoa(192 << 20), "maxmemory-policy": "volatile-lru"}
	for k, v := range want {
		got, err := c.ConfigGet(ctx, k).Result()
		if err != nil {
			t.Fatalf("CONFIG GET %s: %v", k, err)
		}
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}

	// Stopped, it leaves nothing behind: no persistence.
	if err := c.Shutdown(ctx).Err(); err != nil && !errors.Is(err, context.Canceled) && !strings.Contains(err.Error(), "EOF") &&
		!strings.Contains(err.Error(), "connection reset") {
		t.Logf("SHUTDOWN: %v", err)
	}
	select {
	case <-exited:
		exited <- nil // for the cleanup
	case <-ctx.Done():
		t.Fatal("redis-server did not stop on SHUTDOWN")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("redis-server left %s in its directory: the chart's Redis must not persist", e.Name())
	}
}
