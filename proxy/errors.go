package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"

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

// fromUpstream maps an upstream (or storage) failure to the client-facing
// OCI error. It is the only place where that mapping lives.
func fromUpstream(host string, kind objectKind, err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	if ae := mapFillError(host, kind, err); ae != nil {
		return ae
	}
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
	case errors.Is(err, upstream.ErrUnavailable), errors.Is(err, upstream.ErrInvalid),
		errors.Is(err, context.DeadlineExceeded):
		e := newAPIError(errcode.ErrorCodeUnavailable, "upstream "+host+" is unavailable and the content is not cached", err)
		e.status = http.StatusBadGateway
		return e
	}
	return newAPIError(errcode.ErrorCodeUnknown, "internal error", err)
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
	if ae.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((ae.retryAfter+time.Second-1)/time.Second)))
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
