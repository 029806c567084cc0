package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/upstream"
)

// errTestCondition is a proxy condition declared the way other files add
// theirs: one proxyError variable, no change to the mapping.
var errTestCondition = newProxyError(errcode.ErrorCodeUnavailable, http.StatusServiceUnavailable,
	"proxy: test condition", "a local condition; retry later")

// TestErrorMapping: the client-facing status, OCI code, Retry-After and
// message of every kind of failure. The proxy's own conditions and the
// storage's failures are never reported as the upstream's; UNAVAILABLE is a
// 503 (its errcode status) and every 503 carries Retry-After.
func TestErrorMapping(t *testing.T) {
	t.Parallel()
	p := &Proxy{cfg: config.Default(), log: slog.New(slog.DiscardHandler), upstreams: map[string]upstream.Registry{}}
	_, notConfigured := p.upstream("unconfigured.example")
	if notConfigured == nil {
		t.Fatal("upstream() of an unconfigured registry returned no error")
	}
	broken := &Proxy{cfg: config.Default(), upstreams: map[string]upstream.Registry{},
		factory: func(string, config.Upstream) (upstream.Registry, error) {
			return nil, &fs.PathError{Op: "open", Path: "/etc/stowage/ca.pem", Err: fs.ErrNotExist}
		}}
	_, noClient := broken.upstream("docker.io")
	if noClient == nil {
		t.Fatal("upstream() with a failing factory returned no error")
	}
	enospc := &fs.PathError{Op: "write", Path: "/cache/_staging/x", Err: syscall.ENOSPC}
	for _, tc := range []struct {
		name       string
		err        error
		status     int
		code       string
		retryAfter string // "" for none
		msgHas     string
		notUp      bool // the message must not blame the upstream
	}{
		{"registry not configured", notConfigured, 403, "DENIED", "", `registry "unconfigured.example" is not an upstream`, true},
		{"upstream client not built", noClient, 500, "UNKNOWN", "", "could not set up its client", true},
		{"shutting down", errFillClosed, 503, "UNAVAILABLE", "1", "shutting down", true},
		{"shutting down during a resume wait", errors.Join(errFillClosed, context.Canceled), 503, "UNAVAILABLE", "1", "shutting down", true},
		{"disk full behind the storage driver", fmt.Errorf("storage: put manifest: %w",
			storagedriver.Error{DriverName: "filesystem", Detail: enospc}), 507, "UNKNOWN", "", "storage is full", true},
		{"disk full on a staging write", fmt.Errorf("storage: staging: %w", enospc), 507, "UNKNOWN", "", "storage is full", true},
		{"quota exhausted", &fs.PathError{Op: "write", Path: "/x", Err: syscall.EDQUOT}, 507, "UNKNOWN", "", "storage is full", true},
		{"storage failure", fmt.Errorf("storage: put tag: %w",
			storagedriver.Error{DriverName: "filesystem", Detail: &fs.PathError{Op: "mkdir", Path: "/x", Err: syscall.ENOTDIR}}),
			500, "UNKNOWN", "", "storage failed", true},
		{"storage deadline", fmt.Errorf("storage: put manifest: %w",
			storagedriver.Error{DriverName: "filesystem", Detail: context.DeadlineExceeded}), 500, "UNKNOWN", "", "storage failed", true},
		{"upstream unavailable", &upstream.StatusError{Status: 502, Err: upstream.ErrUnavailable}, 503, "UNAVAILABLE", "10", "upstream up.example is unavailable", false},
		{"upstream unavailable with Retry-After", &upstream.StatusError{Status: 503, Err: upstream.ErrUnavailable, RetryAfter: 30 * time.Second},
			503, "UNAVAILABLE", "30", "upstream up.example is unavailable", false},
		{"upstream timeout", fmt.Errorf("get manifest: %w", context.DeadlineExceeded), 503, "UNAVAILABLE", "10", "unavailable", false},
		{"upstream answer unusable", &upstream.StatusError{Status: 416, Err: upstream.ErrInvalid}, 502, "UNKNOWN", "", "cannot use", false},
		{"forward proxy refused", &upstream.StatusError{Status: 407, Err: fmt.Errorf("%w: %w", upstream.ErrProxy, upstream.ErrUnavailable)},
			503, "UNAVAILABLE", "10", "forward proxy refused", false},
		{"internal address refused", fmt.Errorf("token realm: %w", upstream.ErrForbiddenAddress), 502, "UNKNOWN", "", "internal: true", false},
		{"range not satisfiable", &upstream.StatusError{Status: 416, Err: upstream.ErrRangeNotSatisfiable}, 502, "UNKNOWN", "", "range request", false},
		{"rate limited", &upstream.StatusError{Status: 429, Err: upstream.ErrTooManyRequests, RetryAfter: 5 * time.Second}, 429, "TOOMANYREQUESTS", "5", "rate limiting", false},
		{"upstream not found", upstream.ErrNotFound, 404, "MANIFEST_UNKNOWN", "", "manifest unknown", false},
		{"a proxy condition declared elsewhere", fmt.Errorf("detail: %w", errTestCondition), 503, "UNAVAILABLE", "10", "local condition", true},
		{"a 503 apiError without a hint", newAPIError(errcode.ErrorCodeUnavailable, "busy", nil), 503, "UNAVAILABLE", "10", "busy", true},
		{"unclassified", errors.New("something else"), 500, "UNKNOWN", "", "internal error", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			host := "up.example"
			if errors.Is(tc.err, notConfigured) {
				host = "unconfigured.example" // the host the request named
			}
			p.writeError(rec, httptest.NewRequest(http.MethodGet, "/v2/x/manifests/v1", nil),
				fromUpstream(host, kindManifest, tc.err))
			var body errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body.Errors) != 1 {
				t.Fatalf("body %q: %v", rec.Body, err)
			}
			got := body.Errors[0]
			if rec.Code != tc.status || got.Code != tc.code {
				t.Errorf("got %d %s, want %d %s (message %q)", rec.Code, got.Code, tc.status, tc.code, got.Message)
			}
			if ra := rec.Header().Get("Retry-After"); ra != tc.retryAfter {
				t.Errorf("Retry-After %q, want %q", ra, tc.retryAfter)
			}
			if !strings.Contains(got.Message, tc.msgHas) {
				t.Errorf("message %q does not contain %q", got.Message, tc.msgHas)
			}
			if tc.notUp && strings.Contains(got.Message, "upstream "+host) {
				t.Errorf("message %q blames the upstream for a local condition", got.Message)
			}
		})
	}
}
