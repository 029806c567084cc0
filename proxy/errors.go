package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// apiError is the one error type handlers return to clients: an OCI error
// code, the HTTP status, a message for the client and the internal cause for
// the log.
type apiError struct {
	code   errcode.ErrorCode
	status int
	msg    string
	detail any
	// retryAfter is sent as Retry-After when set.
	retryAfter time.Duration
	cause      error
}

func (e *apiError) Error() string {
	if e.cause != nil {
		return e.code.String() + ": " + e.msg + ": " + e.cause.Error()
	}
	return e.code.String() + ": " + e.msg
}

func (e *apiError) Unwrap() error { return e.cause }

func newAPIError(code errcode.ErrorCode, msg string, cause error) *apiError {
	return &apiError{code: code, status: code.Descriptor().HTTPStatusCode, msg: msg, cause: cause}
}

// objectKind tells the error mapping which "unknown" code fits.
type objectKind int

const (
	kindManifest objectKind = iota
	kindBlob
	kindRepo
)

// Retry-After values for 503 answers that have no better hint. Every 503
// carries a Retry-After (writeError adds the default when a mapping sets
// none).
const (
	// retryAfterUnavailable: an upstream failed and the content is not
	// cached; an upstream's own Retry-After is passed on instead when it
	// sent one.
	retryAfterUnavailable = 10 * time.Second
	// retryAfterShuttingDown: this replica is stopping; a retry reaches
	// another replica or the restarted process.
	retryAfterShuttingDown = time.Second
)

// proxyError is a sentinel for a condition of the proxy itself, not of an
// upstream: it carries its own client-facing mapping, so a new condition
// is one variable in the file that raises it, with no change here:
//
//	var errLeaseWait = newProxyError(errcode.ErrorCodeUnavailable, http.StatusServiceUnavailable,
//		"proxy: waiting for another replica's fill timed out", "another replica's download of this content is not finishing; retry later")
//
// Wrap it with %w to add detail for the log; the client sees msg.
type proxyError struct {
	text       string // Error(), for the log
	code       errcode.ErrorCode
	status     int
	msg        string // for the client
	retryAfter time.Duration
}

func newProxyError(code errcode.ErrorCode, status int, text, msg string) *proxyError {
	return &proxyError{text: text, code: code, status: status, msg: msg}
}

func (e *proxyError) Error() string { return e.text }

// The proxy's own conditions (others live beside the code that raises them).
var (
	// errRegistryNotConfigured: a request reached the upstream lookup for a
	// host that is not one of the configured or preset upstreams.
	errRegistryNotConfigured = newProxyError(errcode.ErrorCodeDenied, http.StatusForbidden,
		"proxy: registry not configured", "registry is not an upstream of this proxy")
	// errUpstreamClient: the client for a configured upstream could not be
	// built (say its CA file is unreadable): a configuration problem of the
	// proxy, neither the upstream's nor the cache storage's.
	errUpstreamClient = newProxyError(errcode.ErrorCodeUnknown, http.StatusInternalServerError,
		"proxy: upstream client", "the proxy could not set up its client for this registry; see the proxy's log")
	// errShuttingDown is what a client hears when the proxy stops before it
	// could answer (the fill registry's errFillClosed maps to it).
	errShuttingDown = &proxyError{text: "proxy: shutting down", code: errcode.ErrorCodeUnavailable,
		status: http.StatusServiceUnavailable, msg: "the proxy is shutting down; retry",
		retryAfter: retryAfterShuttingDown}
)

// errorMapper maps an error to the client-facing OCI error, or returns nil
// when the error is not its kind.
type errorMapper func(host string, kind objectKind, err error) *apiError

// errorMappers are tried in order by fromUpstream; the first answer wins.
// The proxy's own conditions come first, so that they are never reported as
// the upstream's; a storage failure is checked before a bare deadline, which
// is the upstream's (the upstream context's timeout).
var errorMappers = []errorMapper{mapFillError, mapProxyError, mapUpstreamError, mapStorageError, mapUpstreamDeadline}

// fromUpstream maps a failure (the proxy's own, the upstream's or the
// storage's) to the client-facing OCI error. It is the only place where that
// mapping lives; new conditions add a proxyError sentinel or a mapper.
func fromUpstream(host string, kind objectKind, err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	for _, m := range errorMappers {
		if ae := m(host, kind, err); ae != nil {
			return ae
		}
	}
	return newAPIError(errcode.ErrorCodeUnknown, "internal error", err)
}

// mapProxyError maps the proxy's own conditions.
func mapProxyError(host string, _ objectKind, err error) *apiError {
	var pe *proxyError
	switch {
	case errors.Is(err, errFillClosed):
		pe = errShuttingDown
	case !errors.As(err, &pe):
		return nil
	}
	msg := pe.msg
	if pe == errRegistryNotConfigured {
		msg = "registry " + quoteShort(host) + " is not an upstream of this proxy"
	}
	e := newAPIError(pe.code, msg, err)
	e.status = pe.status
	e.retryAfter = pe.retryAfter
	return e
}

// mapUpstreamError maps the upstream client's sentinels.
func mapUpstreamError(host string, kind objectKind, err error) *apiError {
	switch {
	case errors.Is(err, upstream.ErrNotFound), errors.Is(err, storage.ErrNotFound):
		switch kind {
		case kindBlob:
			return newAPIError(errcode.ErrorCodeBlobUnknown, "blob unknown to registry", err)
		case kindRepo:
			return newAPIError(errcode.ErrorCodeNameUnknown, "repository name not known to registry", err)
		}
		return newAPIError(errcode.ErrorCodeManifestUnknown, "manifest unknown", err)
	case errors.Is(err, upstream.ErrUnauthorized):
		e := newAPIError(errcode.ErrorCodeDenied, "upstream "+host+" rejected the proxy's credentials", err)
		e.status = http.StatusForbidden
		return e
	case errors.Is(err, upstream.ErrDenied):
		return newAPIError(errcode.ErrorCodeDenied, "upstream "+host+" denied access", err)
	case errors.Is(err, upstream.ErrTooManyRequests):
		e := newAPIError(errcode.ErrorCodeTooManyRequests, "upstream "+host+" is rate limiting; retry later", err)
		e.retryAfter, _ = upstream.RetryAfter(err)
		return e
	case errors.Is(err, upstream.ErrTooLarge):
		e := newAPIError(errcode.ErrorCodeManifestInvalid, "upstream manifest exceeds the size limit", err)
		e.status = http.StatusBadGateway
		return e
	case errors.Is(err, upstream.ErrDigestMismatch):
		e := newAPIError(errcode.ErrorCodeUnknown, "upstream "+host+" served content that does not match its digest", err)
		e.status = http.StatusBadGateway
		return e
	case errors.Is(err, upstream.ErrInvalid):
		// The upstream answered, but not with anything the proxy can use
		// (an unexpected status or body): a bad gateway, not an outage.
		e := newAPIError(errcode.ErrorCodeUnknown, "upstream "+host+" sent an answer the proxy cannot use", err)
		e.status = http.StatusBadGateway
		return e
	case errors.Is(err, upstream.ErrForbiddenAddress):
		// The proxy's own address policy refused where the upstream sent
		// it (a redirect or token realm on an internal address): the
		// operator's to fix with internal: true, not the client's.
		e := newAPIError(errcode.ErrorCodeUnknown, "upstream "+host+" sent the proxy to an internal address that the configuration does not allow (see internal: true)", err)
		e.status = http.StatusBadGateway
		return e
	case errors.Is(err, upstream.ErrRangeNotSatisfiable):
		e := newAPIError(errcode.ErrorCodeUnknown, "upstream "+host+" refused the proxy's range request", err)
		e.status = http.StatusBadGateway
		return e
	case errors.Is(err, upstream.ErrProxy):
		e := upstreamUnavailable(host, err)
		e.msg = "the forward proxy refused or failed the request to upstream " + host + " and the content is not cached"
		return e
	case errors.Is(err, upstream.ErrUnavailable):
		return upstreamUnavailable(host, err)
	}
	return nil
}

// mapUpstreamDeadline: a deadline that no storage call claimed is the
// upstream context's (upstreamCtx) running out.
func mapUpstreamDeadline(host string, _ objectKind, err error) *apiError {
	if errors.Is(err, context.DeadlineExceeded) {
		return upstreamUnavailable(host, err)
	}
	return nil
}

// upstreamUnavailable is 503 UNAVAILABLE (the errcode's own status) with
// the upstream's Retry-After, or retryAfterUnavailable.
func upstreamUnavailable(host string, err error) *apiError {
	e := newAPIError(errcode.ErrorCodeUnavailable, "upstream "+host+" is unavailable and the content is not cached", err)
	e.retryAfter = retryAfterUnavailable
	if ra, ok := upstream.RetryAfter(err); ok {
		e.retryAfter = ra
	}
	return e
}

// mapStorageError maps failures of the cache's storage: a full disk is 507
// Insufficient Storage, any other storage failure 500 that names the
// storage. Neither is the upstream's fault.
func mapStorageError(_ string, _ objectKind, err error) *apiError {
	switch {
	case isDiskFull(err):
		e := newAPIError(errcode.ErrorCodeUnknown, "the cache's storage is full; the content cannot be cached", err)
		e.status = http.StatusInsufficientStorage
		return e
	case isStorageFailure(err):
		return newAPIError(errcode.ErrorCodeUnknown, "the cache's storage failed", err)
	}
	return nil
}

// isDiskFull reports a full disk or an exhausted quota, also behind a
// storage driver's error (storagedriver.Error does not unwrap).
func isDiskFull(err error) bool {
	full := func(err error) bool { return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) }
	return full(err) || anyDriverDetail(err, full)
}

// isStorageFailure reports a failed file-system operation or a storage
// driver error. The upstream client makes no file-system calls, and its
// network errors are *net.OpError, not *fs.PathError.
func isStorageFailure(err error) bool {
	var pe *fs.PathError
	var le *os.LinkError
	return errors.As(err, &pe) || errors.As(err, &le) || anyDriverDetail(err, func(error) bool { return true })
}

// anyDriverDetail reports whether err holds a storage driver error whose
// detail satisfies match.
func anyDriverDetail(err error, match func(error) bool) bool {
	var de storagedriver.Error
	if errors.As(err, &de) && de.Detail != nil && match(de.Detail) {
		return true
	}
	var des storagedriver.Errors
	if errors.As(err, &des) {
		for _, e := range des.Errs {
			if match(e) {
				return true
			}
		}
	}
	return false
}

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// writeError writes the OCI error envelope (no body on HEAD) and logs the
// internal cause. It is the only writer of error responses.
func (p *Proxy) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = fromUpstream("", kindManifest, err)
	}
	if ae.status >= 500 {
		p.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "code", ae.code.String(), "err", err)
	} else if ae.cause != nil {
		p.log.DebugContext(r.Context(), "request refused", "method", r.Method, "path", r.URL.Path, "code", ae.code.String(), "err", err)
	}
	body, mErr := json.Marshal(errorBody{Errors: []errorEntry{{Code: ae.code.String(), Message: ae.msg, Detail: ae.detail}}})
	if mErr != nil {
		body = []byte(`{"errors":[{"code":"UNKNOWN","message":"internal error"}]}`)
	}
	h := w.Header()
	h.Del("Content-Length")
	h.Del("Docker-Content-Digest")
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	retryAfter := ae.retryAfter
	if ae.status == http.StatusServiceUnavailable && retryAfter <= 0 {
		retryAfter = retryAfterUnavailable // every 503 says when to retry
	}
	if retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((retryAfter+time.Second-1)/time.Second)))
	}
	w.WriteHeader(ae.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

func errNameInvalid(msg string) *apiError {
	return newAPIError(errcode.ErrorCodeNameInvalid, msg, nil)
}

func errDigestInvalid(msg string) *apiError {
	return newAPIError(errcode.ErrorCodeDigestInvalid, msg, nil)
}

func errUnsupported(method string) *apiError {
	return newAPIError(errcode.ErrorCodeUnsupported, fmt.Sprintf("%s is not supported: this registry is a read-only pull-through cache", method), nil)
}
