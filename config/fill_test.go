package config

import (
	"strings"
	"testing"
	"time"
)

// TestFillBoundsValidated: every cache.fill bound must be usable.
func TestFillBoundsValidated(t *testing.T) {
	t.Parallel()
	if err := Default().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for name, set := range map[string]func(*Fill){
		"max_attempts":        func(f *Fill) { f.MaxAttempts = 0 },
		"max_download_factor": func(f *Fill) { f.MaxDownloadFactor = 0 },
		"min_rate":            func(f *Fill) { f.MinRate = -1 },
		"min_rate_window":     func(f *Fill) { f.MinRateWindow = 0 },
		"max_duration":        func(f *Fill) { f.MaxDuration = -time.Second },
		"abandon_after":       func(f *Fill) { f.AbandonAfter = 0 },
	} {
		c := Default()
		set(&c.Cache.Fill)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "cache.fill") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
