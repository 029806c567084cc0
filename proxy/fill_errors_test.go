package proxy

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stowage/stowage/proxy/internal/fill"
	"github.com/stowage/stowage/upstream"
)

// TestFillErrorsAreTheProxysOwn: the proxy's own fill conditions are not
// reported as upstream failures, and a 503 that ended a fill keeps its
// Retry-After.
func TestFillErrorsAreTheProxysOwn(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err        error
		status     int
		code       string
		retryAfter time.Duration
	}{
		{fmt.Errorf("%w: waited 30m0s", fill.ErrLeaseTimeout), http.StatusServiceUnavailable, "UNAVAILABLE", retryLater},
		{fmt.Errorf("%w: from 1 to 2", fill.ErrSizeChanged), http.StatusBadGateway, "BLOB_UNKNOWN", 0},
		{fill.ErrCancelled, http.StatusServiceUnavailable, "UNAVAILABLE", retryLater},
		{fmt.Errorf("%w: 10 attempts", fill.ErrBudget), http.StatusServiceUnavailable, "UNAVAILABLE", retryLater},
		{fmt.Errorf("%w: %w", errFill, &upstream.StatusError{Status: 503, RetryAfter: 9 * time.Second, Err: upstream.ErrUnavailable}),
			http.StatusServiceUnavailable, "UNAVAILABLE", 9 * time.Second},
		{fmt.Errorf("%w: %w", errFill, &upstream.StatusError{Status: 429, RetryAfter: 3 * time.Second, Err: upstream.ErrTooManyRequests}),
			http.StatusTooManyRequests, "TOOMANYREQUESTS", 3 * time.Second},
	}
	for _, tt := range tests {
		e := fromUpstream("docker.io", kindBlob, tt.err)
		if e.status != tt.status || e.code.String() != tt.code || e.retryAfter != tt.retryAfter {
			t.Errorf("%v: %d %s Retry-After %s; want %d %s %s", tt.err, e.status, e.code, e.retryAfter, tt.status, tt.code, tt.retryAfter)
		}
	}
}
