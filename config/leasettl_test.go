package config

import (
	"strings"
	"testing"
	"time"
)

func TestValidateLeaseTTL(t *testing.T) {
	for _, tc := range []struct {
		name    string
		addr    string
		ttl     time.Duration
		timeout time.Duration
		wantErr string // "" valid
	}{
		{"default", "127.0.0.1:6379", DefaultLeaseTTL, 500 * time.Millisecond, ""},
		{"minimum", "127.0.0.1:6379", time.Second, 300 * time.Millisecond, ""},
		{"below the minimum", "127.0.0.1:6379", 500 * time.Millisecond, 100 * time.Millisecond, "at least 1s"},
		{"zero", "127.0.0.1:6379", 0, 500 * time.Millisecond, "at least 1s"},
		{"shorter than three timeouts", "127.0.0.1:6379", 2 * time.Second, time.Second, "3x redis.timeout"},
		{"no redis", "", 0, 500 * time.Millisecond, ""},
	} {
		c := Default()
		c.Redis.Addr, c.Redis.LeaseTTL, c.Redis.Timeout = tc.addr, tc.ttl, tc.timeout
		err := c.Validate()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.wantErr)
		}
	}
	c, err := Load(strings.NewReader("redis:\n  addr: 127.0.0.1:6379\n  lease_ttl: 3s\n"))
	if err != nil || c.Redis.LeaseTTL != 3*time.Second {
		t.Fatalf("lease_ttl from YAML: %v %v", c.Redis.LeaseTTL, err)
	}
}
