package proxy

import (
	"sort"
	"time"
)

// UpstreamState is what the proxy knows about one configured upstream
// registry right now, for the dashboard: its endpoints and whether it is
// in a down window after failures. It is read from memory only; nothing
// here contacts the upstream.
type UpstreamState struct {
	// Host is the registry host ("docker.io").
	Host string `json:"host"`
	// Endpoints are the configured endpoint URLs (empty: the host itself).
	Endpoints []string `json:"endpoints,omitempty"`
	// Down is true while the upstream is in its down window: stale tags
	// are served without asking it.
	Down bool `json:"down"`
	// DownUntil is the end of the down window.
	DownUntil *time.Time `json:"down_until,omitempty"`
	// Failures counts consecutive failures since the last success.
	Failures int `json:"failures,omitempty"`
	// LastError is the last failure since the last success.
	LastError string `json:"last_error,omitempty"`
	// LastErrorAt is when it happened.
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
}

// UpstreamStates lists the configured, enabled upstreams (presets
// included) with their current state, sorted by host.
func (p *Proxy) UpstreamStates() []UpstreamState {
	now := p.now()
	hosts := map[string]bool{}
	for _, h := range p.cfg.Hosts() {
		hosts[h] = true
	}
	p.down.mu.Lock()
	for h := range p.down.hosts {
		hosts[h] = true
	}
	out := make([]UpstreamState, 0, len(hosts))
	for h := range hosts {
		st := UpstreamState{Host: h}
		if u, ok := p.cfg.Upstream(h); ok {
			st.Endpoints = u.Endpoints
		}
		if s, ok := p.down.hosts[h]; ok {
			st.Failures, st.LastError = s.failures, s.lastErr
			if !s.lastAt.IsZero() {
				at := s.lastAt
				st.LastErrorAt = &at
			}
			if now.Before(s.until) {
				until := s.until
				st.Down, st.DownUntil = true, &until
			}
		}
		out = append(out, st)
	}
	p.down.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out
}
