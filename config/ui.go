package config

import "time"

// UI configures the web dashboard under /ui/ and its read API under
// /api/v1/. The dashboard is protected like the admin API (admin.token_env
// or admin.token_file); without a token it is served only when
// PublicReadOnly is set.
type UI struct {
	// Disabled turns the dashboard and its read API off.
	Disabled bool `yaml:"disabled"`
	// PublicReadOnly lets anyone read the dashboard and its JSON API
	// without a token. Writes (starting a prefetch, cancelling a fill)
	// still need the admin token.
	PublicReadOnly bool `yaml:"public_read_only"`
	// SampleInterval is how often the traffic counters are sampled for
	// the last-hour plots (default 10s; the last-day plots keep one
	// sample per 5 minutes).
	SampleInterval time.Duration `yaml:"sample_interval"`
	// PullHost is the host[:port] shown in the copyable pull commands
	// (default: the Host the browser used).
	PullHost string `yaml:"pull_host"`
}
