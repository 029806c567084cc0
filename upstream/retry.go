package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/stowage/stowage/config"
)

// retryTransport retries temporary failures (network errors, 408, 429, 500,
// 502, 503, 504) with exponential backoff and jitter, honouring
// Retry-After up to MaxBackoff. It only retries requests without a body (or
// with GetBody) and never after a response was handed on: once the caller
// reads a body, resuming is the caller's job (GetBlob with an offset). When
// the budget is spent it returns the last response (the caller maps its
// status, Retry-After included) or the last error.
type retryTransport struct {
	inner  http.RoundTripper
	policy config.Retry
	sleep  func(ctx context.Context, d time.Duration) error
	log    *slog.Logger
	red    redactor
	now    func() time.Time
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	attempts := max(t.policy.Attempts, 1)
	for attempt := 1; ; attempt++ {
		r := req
		if attempt > 1 && req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				attempts = attempt - 1 // cannot replay: no more tries
			} else {
				body, err := req.GetBody()
				if err != nil {
					return nil, err
				}
				r = req.Clone(req.Context())
				r.Body = body
			}
		}
		resp, err := t.inner.RoundTrip(r)
		wait, retry := t.classify(resp, err, attempt)
		if !retry || attempt >= attempts || req.Context().Err() != nil {
			return resp, err
		}
		if resp != nil {
			// Drain a little so the connection can be reused.
			_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
			resp.Body.Close()
		}
		t.log.LogAttrs(req.Context(), levelFor(attempt, attempts), "upstream retry",
			slog.String("method", req.Method),
			slog.String("url", t.red.URL(req.URL)),
			slog.Int("attempt", attempt),
			slog.Duration("wait", wait),
			slog.String("reason", t.reason(resp, err)))
		if err := t.sleep(req.Context(), wait); err != nil {
			return nil, err
		}
	}
}

// classify says whether to retry and how long to wait first.
func (t *retryTransport) classify(resp *http.Response, err error, attempt int) (time.Duration, bool) {
	backoff := t.backoff(attempt)
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return 0, false
		}
		var se *StatusError
		if errors.As(err, &se) { // from the auth layer (ping, token)
			if !temporaryStatus(se.Status) {
				return 0, false
			}
			return t.honour(se.RetryAfter, backoff), true
		}
		return backoff, !permanentNetError(err)
	}
	if !temporaryStatus(resp.StatusCode) {
		return 0, false
	}
	if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), t.now()); ok {
		return t.honour(d, backoff), true
	}
	return backoff, true
}

// honour returns the server's Retry-After capped by MaxBackoff, or the
// backoff when the server said nothing.
func (t *retryTransport) honour(retryAfter, backoff time.Duration) time.Duration {
	if retryAfter <= 0 {
		return backoff
	}
	return min(retryAfter, t.policy.MaxBackoff)
}

// backoff is InitialBackoff * 2^(attempt-1), capped by MaxBackoff, with
// jitter in [d/2, d].
func (t *retryTransport) backoff(attempt int) time.Duration {
	d := t.policy.InitialBackoff
	for i := 1; i < attempt && d < t.policy.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, t.policy.MaxBackoff)
	if d <= 0 {
		return 0
	}
	half := d / 2
	return half + rand.N(d-half+1) //nolint:gosec // jitter, not crypto
}

func (t *retryTransport) reason(resp *http.Response, err error) string {
	if err != nil {
		return t.red.String(err.Error())
	}
	return resp.Status
}

// permanentNetError reports transport errors that a retry cannot fix: a
// refused redirect or a certificate that does not verify.
func permanentNetError(err error) bool {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	return errors.Is(err, errRedirectRefused) || errors.As(err, &cv) ||
		errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci)
}

func levelFor(attempt, attempts int) slog.Level {
	if attempt+1 >= attempts {
		return slog.LevelWarn
	}
	return slog.LevelDebug
}
