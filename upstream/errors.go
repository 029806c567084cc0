package upstream

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// maxErrorBody caps how much of an error answer is read: enough for any OCI
// error envelope, small enough that a hostile upstream cannot make us
// buffer a blob.
const maxErrorBody = 64 << 10

// errProxyAnswer is the sentinel of an answer that is the forward proxy's:
// ErrProxy together with ErrUnavailable (see ErrProxy).
var errProxyAnswer = fmt.Errorf("%w: %w", ErrProxy, ErrUnavailable)

// sentinelFor is the one place that maps an upstream HTTP status to a
// sentinel error. A 403 reaching it is the registry's own (proxyAnswers
// turns the others into errProxyAnswer before).
func sentinelFor(status int) error {
	switch {
	case status == http.StatusNotFound:
		return ErrNotFound
	case status == http.StatusUnauthorized:
		return ErrUnauthorized
	case status == http.StatusForbidden:
		return ErrDenied
	case status == http.StatusProxyAuthRequired:
		// 407 is only ever the forward proxy's answer.
		return errProxyAnswer
	case status == http.StatusRequestedRangeNotSatisfiable:
		return ErrRangeNotSatisfiable
	case status == http.StatusTooManyRequests:
		return ErrTooManyRequests
	case status == http.StatusRequestTimeout, status >= 500:
		return ErrUnavailable
	default:
		return ErrInvalid
	}
}

// temporaryStatus reports whether a status is worth retrying.
func temporaryStatus(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusTooManyRequests,
		http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// ociErrors is the OCI distribution error envelope.
type ociErrors struct {
	Errors []struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"errors"`
}

// errorFromResponse turns a non-success answer into a *StatusError, reading
// at most maxErrorBody bytes of the body, and closes the body.
func errorFromResponse(resp *http.Response, now time.Time) *StatusError {
	defer resp.Body.Close()
	e := &StatusError{Status: resp.StatusCode, Err: sentinelFor(resp.StatusCode)}
	if resp.Request != nil {
		e.Method, e.URL = resp.Request.Method, redactURL(resp.Request.URL)
	}
	if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), now); ok {
		e.RetryAfter = d
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var env ociErrors
	if json.Unmarshal(body, &env) == nil && len(env.Errors) > 0 {
		e.Code = env.Errors[0].Code
		e.Message = truncate(env.Errors[0].Message, 512)
	}
	return e
}

// fromTransportError converts an error of go-containerregistry's auth
// transport (ping, token exchange) into a *StatusError with our sentinels;
// other errors are returned unchanged.
func fromTransportError(err error) error {
	var te *transport.Error
	if !errors.As(err, &te) {
		return err
	}
	e := &StatusError{Status: te.StatusCode, Err: sentinelFor(te.StatusCode)}
	if te.Request != nil {
		e.Method, e.URL = te.Request.Method, redactURL(te.Request.URL)
	}
	if len(te.Errors) > 0 {
		e.Code = string(te.Errors[0].Code)
		e.Message = truncate(te.Errors[0].Message, 512)
	}
	return e
}

// networkError wraps a transport-level failure (no HTTP answer) as
// ErrUnavailable, keeping context cancellation visible to errors.Is.
func networkError(err error) error {
	if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrTooManyRequests) {
		return err
	}
	var se *StatusError
	if errors.As(err, &se) {
		return err
	}
	if errors.Is(err, ErrForbiddenAddress) {
		return err // a configuration matter, neither invalid nor unavailable
	}
	if errors.Is(err, errRedirectRefused) {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if permanentNetError(err) {
		return fmt.Errorf("%w: %w: %w", ErrUnavailable, ErrCertificate, err)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// parseRetryAfter reads a Retry-After value in seconds or as an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(s) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	if d < 0 {
		d = 0
	}
	return d, true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
