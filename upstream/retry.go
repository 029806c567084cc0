package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/stowage/stowage/config"
)

// NewBackOff is Stowage's one retry timing policy, for every retry loop
// (the upstream client's metadata retries and the blob fill's resumes):
// exponential from r.InitialBackoff, doubling, with randomized jitter
// (each wait is the current interval times a factor in [0.5, 1.5]), and no
// wait over r.MaxBackoff. It never returns backoff.Stop: the caller counts
// attempts (r.Attempts). Unset fields of r take config.DefaultRetry.
func NewBackOff(r config.Retry) backoff.BackOff {
	r = r.WithDefaults()
	b := &backoff.ExponentialBackOff{
		InitialInterval:     r.InitialBackoff,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         r.MaxBackoff,
	}
	b.Reset()
	return &cappedBackOff{inner: b, max: r.MaxBackoff}
}

// cappedBackOff caps the randomized wait too (ExponentialBackOff caps only
// the interval it randomizes).
type cappedBackOff struct {
	inner backoff.BackOff
	max   time.Duration
}

func (c *cappedBackOff) NextBackOff() time.Duration {
	d := c.inner.NextBackOff()
	if d == backoff.Stop {
		return d
	}
	return min(d, c.max)
}

func (c *cappedBackOff) Reset() { c.inner.Reset() }

// attemptBudget is the number of requests one call to one endpoint may
// still send, shared by its redirect hops (Client.do sizes it so that the
// endpoints together send at most Retry.Attempts, each at least one).
// Every RoundTrip sends its first request; a retry needs budget left.
type attemptBudget struct {
	mu   sync.Mutex
	left int
}

type budgetKey struct{}

func withBudget(ctx context.Context, b *attemptBudget) context.Context {
	return context.WithValue(ctx, budgetKey{}, b)
}

// spend counts one request sent.
func (b *attemptBudget) spend() {
	b.mu.Lock()
	b.left--
	b.mu.Unlock()
}

// remaining is how many more requests may be sent.
func (b *attemptBudget) remaining() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.left
}

// retryTransport retries temporary failures (network errors, 408, 429, 500,
// 502, 503, 504) with NewBackOff's timing, within the attempt budget of
// the call (attemptBudget in the request context; without one,
// policy.Attempts per RoundTrip). It honours Retry-After up to MaxBackoff;
// an answer whose Retry-After asks for more is handed on at once (the
// caller maps its status and Retry-After), not waited for. It only retries
// requests without a body (or with GetBody) and never after a response was
// handed on: once the caller reads a body, resuming is the caller's job.
// When the budget is spent it returns the last response or error.
type retryTransport struct {
	inner  http.RoundTripper
	policy config.Retry
	sleep  func(ctx context.Context, d time.Duration) error
	log    *slog.Logger
	red    redactor
	now    func() time.Time
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	budget, _ := req.Context().Value(budgetKey{}).(*attemptBudget)
	if budget == nil {
		budget = &attemptBudget{left: max(t.policy.Attempts, 1)}
	}
	bo := NewBackOff(t.policy)
	canReplay := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	for attempt := 1; ; attempt++ {
		budget.spend()
		r := req
		if attempt > 1 && req.Body != nil && req.Body != http.NoBody {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			r = req.Clone(req.Context())
			r.Body = body
		}
		resp, err := t.inner.RoundTrip(r)
		wait, retry := t.classify(resp, err, bo)
		left := budget.remaining()
		if !retry || !canReplay || req.Context().Err() != nil || left <= 0 {
			return resp, err
		}
		if resp != nil {
			// Drain a little so the connection can be reused.
			_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
			resp.Body.Close()
		}
		level := slog.LevelDebug
		if left == 1 {
			level = slog.LevelWarn // the last try
		}
		t.log.LogAttrs(req.Context(), level, "upstream retry",
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
func (t *retryTransport) classify(resp *http.Response, err error, bo backoff.BackOff) (time.Duration, bool) {
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return 0, false
		}
		var se *StatusError
		if errors.As(err, &se) { // from the auth layer (ping, token) or the proxy
			if !temporaryStatus(se.Status) || !Retryable(se) {
				return 0, false
			}
			return t.honour(se.RetryAfter, bo)
		}
		return bo.NextBackOff(), !permanentNetError(err)
	}
	if !temporaryStatus(resp.StatusCode) {
		return 0, false
	}
	d, _ := parseRetryAfter(resp.Header.Get("Retry-After"), t.now())
	return t.honour(d, bo)
}

// honour returns the server's Retry-After when it fits under MaxBackoff,
// no retry when it asks for more (the answer is passed on), or the
// backoff when the server said nothing.
func (t *retryTransport) honour(retryAfter time.Duration, bo backoff.BackOff) (time.Duration, bool) {
	if retryAfter <= 0 {
		return bo.NextBackOff(), true
	}
	if retryAfter > t.policy.MaxBackoff {
		return 0, false
	}
	return retryAfter, true
}

func (t *retryTransport) reason(resp *http.Response, err error) string {
	if err != nil {
		return t.red.String(err.Error())
	}
	return resp.Status
}

// permanentNetError reports transport errors that a retry cannot fix: a
// refused redirect, an internal address the upstream may not reach, or a
// certificate that does not verify.
func permanentNetError(err error) bool {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	return errors.Is(err, errRedirectRefused) || errors.Is(err, ErrForbiddenAddress) || errors.As(err, &cv) ||
		errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci)
}
