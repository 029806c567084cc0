package proxy

import (
	"errors"
	"net/http"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"

	"github.com/stowage/stowage/proxy/internal/fill"
	"github.com/stowage/stowage/upstream"
)

// errFill marks the outcome of a fill as seen by its clients, so that an
// upstream 503 that ended a fill is passed on as a 503.
var errFill = errors.New("blob fill")

// retryLater is the Retry-After of the proxy's own "try again" answers.
const retryLater = 5 * time.Second

// mapFillError is fillAPIError in the shape of an error mapper (nil: not
// a fill condition).
func mapFillError(host string, _ objectKind, err error) *apiError {
	ae, _ := fillAPIError(host, err)
	return ae
}

// fillAPIError maps the fill's own errors (package fill) and an upstream
// 503 that ended a fill to client errors. ok is false for anything else.
func fillAPIError(host string, err error) (*apiError, bool) {
	unavailable := func(msg string, retry time.Duration) *apiError {
		e := newAPIError(errcode.ErrorCodeUnavailable, msg, err)
		e.retryAfter = retry
		return e
	}
	switch {
	case errors.Is(err, fill.ErrLeaseTimeout):
		return unavailable("another replica is still downloading the blob; retry later", retryLater), true
	case errors.Is(err, fill.ErrCancelled):
		return unavailable("the blob download was cancelled by an operator", retryLater), true
	case errors.Is(err, fill.ErrTooMany):
		return unavailable("too many blob downloads are running (cache.fill.max_concurrent); retry later", retryLater), true
	case errors.Is(err, fill.ErrClosed):
		return unavailable("the proxy is shutting down; retry", time.Second), true
	case errors.Is(err, fill.ErrSizeChanged):
		e := newAPIError(errcode.ErrorCodeBlobUnknown, "upstream "+host+" changed the blob's size during the download", err)
		e.status = http.StatusBadGateway
		return e, true
	case errors.Is(err, fill.ErrAbandoned), errors.Is(err, fill.ErrBudget), errors.Is(err, fill.ErrTooSlow):
		return unavailable("upstream "+host+" is too slow or unreliable to download the blob; retry later", retryLater), true
	}
	var se *upstream.StatusError
	if errors.Is(err, errFill) && errors.As(err, &se) && se.Status == http.StatusServiceUnavailable {
		retry, ok := upstream.RetryAfter(err)
		if !ok {
			retry = retryLater
		}
		return unavailable("upstream "+host+" is unavailable and the blob is not cached", retry), true
	}
	return nil, false
}
