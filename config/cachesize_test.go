package config

import (
	"strings"
	"testing"
	"time"
)

func TestCacheSizeSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		yaml    string
		max     int64
		free    FreeSpace
		after   Duration
		wantErr string
	}{
		{yaml: "cache: {max_size: 200GiB, min_free: 10%, evict_after: 720h}", max: 200 << 30, free: FreeSpace{Percent: 10}, after: Duration(720 * time.Hour)},
		{yaml: "cache: {max_size: 20GB, min_free: 20GiB}", max: 20e9, free: FreeSpace{Bytes: 20 << 30}},
		{yaml: "cache: {max_size: 0, min_free: 0, evict_after: 0}"},
		{yaml: "cache: {max_size: 1048576}", max: 1 << 20},
		{yaml: "cache: {max_size: 1.5GiB}", max: 3 << 29},
		{yaml: "cache: {max_size: -5GiB}", wantErr: "size"},
		{yaml: "cache: {max_size: 10%}", wantErr: "size"},
		{yaml: "cache: {max_size: lots}", wantErr: "size"},
		{yaml: "cache: {min_free: 100%}", wantErr: "percentage"},
		{yaml: "cache: {min_free: -1%}", wantErr: "percentage"},
		{yaml: "cache: {evict_after: -1h}", wantErr: "evict_after"},
		{yaml: "cache: {evict_after: 5m}", wantErr: "evict_after"},
		{yaml: "cache: {evict_grace: 1s}", wantErr: "evict_grace"},
	}
	for _, tt := range tests {
		t.Run(tt.yaml, func(t *testing.T) {
			t.Parallel()
			c, err := Load(strings.NewReader(tt.yaml))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if int64(c.Cache.MaxSize) != tt.max || c.Cache.MinFree != tt.free || c.Cache.EvictAfter != tt.after {
				t.Fatalf("got max %d free %+v after %s", c.Cache.MaxSize, c.Cache.MinFree, c.Cache.EvictAfter.Std())
			}
			if c.Cache.EvictGrace != DefaultEvictGrace {
				t.Fatalf("grace %s", c.Cache.EvictGrace)
			}
		})
	}
}

func TestFreeSpaceOf(t *testing.T) {
	t.Parallel()
	if got := (FreeSpace{Percent: 10}).Of(1000); got != 100 {
		t.Fatalf("10%% of 1000 = %d", got)
	}
	if got := (FreeSpace{Bytes: 42}).Of(1000); got != 42 {
		t.Fatalf("42 bytes = %d", got)
	}
	if s := ByteSize(200 << 30).String(); s != "200GiB" {
		t.Fatalf("String = %s", s)
	}
}
