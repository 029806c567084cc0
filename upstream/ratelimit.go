package upstream

import (
	"net/http"
	"strconv"
	"strings"
)

// observeRateLimit reports Docker Hub's rate-limit headers
// ("ratelimit-limit: 100;w=21600", "ratelimit-remaining: 76;w=21600") to
// the observer, if any.
func (c *Client) observeRateLimit(h http.Header) {
	if c.opts.rateLimit == nil {
		return
	}
	limit, ok1 := rateLimitValue(h.Get("Ratelimit-Limit"))
	remaining, ok2 := rateLimitValue(h.Get("Ratelimit-Remaining"))
	if ok1 && ok2 {
		c.opts.rateLimit(c.host, limit, remaining)
	}
}

// rateLimitValue parses "100;w=21600" (or "100") into 100.
func rateLimitValue(v string) (int, bool) {
	v, _, _ = strings.Cut(v, ";")
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}
