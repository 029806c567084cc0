package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisAddr is the real Redis the tests share (.ci/run starts it).
const RedisAddr = "127.0.0.1:6379"

// Redis connects to the shared real Redis and returns the client with a
// fresh key prefix, so that parallel tests never see each other's keys.
// Without Redis the test fails in CI (CI set) and is skipped elsewhere.
func Redis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: RedisAddr})
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis on %s: %v", RedisAddr, err)
		}
		t.Skipf("redis on %s: %v", RedisAddr, err)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	return c, "stowage-test-" + hex.EncodeToString(id[:]) + ":"
}
