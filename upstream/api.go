package upstream

import (
	"context"
	"errors"
	"io"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"
)

// Registry is what the proxy needs from one logical upstream registry. The
// proxy depends on this interface only, so tests can wrap a real client with
// fault injection and a cluster coordinator can wrap it with leases.
//
// repo is the repository path inside the upstream ("library/alpine"), never
// prefixed by the registry host. ref is a tag or a digest string.
type Registry interface {
	// GetManifest fetches a manifest. accept lists the media types the
	// caller accepts (nil: every manifest type Stowage knows). The body is
	// capped (config.Cache.MaxManifestSize); when ref is a digest the body
	// is verified against it.
	GetManifest(ctx context.Context, repo, ref string, accept []string) (*Manifest, error)
	// HeadManifest resolves a reference without fetching the body
	// (Manifest.Body is nil; Manifest.Digest is "" when a tag HEAD carried
	// no Docker-Content-Digest). Docker Hub does not count HEADs against the
	// pull limit.
	HeadManifest(ctx context.Context, repo, ref string, accept []string) (*Manifest, error)
	// GetBlob opens a blob body starting at offset (a Range request when
	// offset > 0). The returned Blob says where its body really starts: a
	// server that ignores Range answers from 0.
	GetBlob(ctx context.Context, repo string, dgst digest.Digest, offset int64) (*Blob, error)
	// HeadBlob returns the size of a blob without downloading it.
	HeadBlob(ctx context.Context, repo string, dgst digest.Digest) (int64, error)
	// Tags lists tags with the registry's n/last pagination (n <= 0: the
	// server's default page).
	Tags(ctx context.Context, repo string, n int, last string) (*TagPage, error)
	// Referrers fetches the OCI 1.1 referrers index for a digest, optionally
	// filtered by artifactType.
	Referrers(ctx context.Context, repo string, dgst digest.Digest, artifactType string) (*Manifest, error)
}

// Manifest is a manifest (or referrers index) as served by the upstream.
type Manifest struct {
	// Digest is the content digest (from Docker-Content-Digest, verified
	// against Body when the body was fetched).
	Digest digest.Digest
	// MediaType is the Content-Type the upstream sent (parameters removed).
	MediaType string
	// Size is the body length in bytes.
	Size int64
	// Body is the raw bytes, byte-identical to the upstream's; nil for HEAD.
	Body []byte
}

// Blob is an open upstream blob body.
type Blob struct {
	// Body must be closed by the caller.
	Body io.ReadCloser
	// Offset is where Body starts in the blob: the requested offset for a
	// 206 whose Content-Range matched, 0 when the server ignored Range.
	Offset int64
	// Size is the total blob size when the server said it (Content-Length
	// of a 200, or the total of Content-Range); -1 when unknown.
	Size int64
}

// TagPage is one page of a tags/list answer.
type TagPage struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
	// Next is the "last" value for the next page when the upstream sent a
	// Link header; empty when this is the last page.
	Next string `json:"-"`
}

// Sentinel errors. Every error the client returns wraps one of them (test
// with errors.Is), so the proxy maps upstream outcomes to OCI errors in one
// place.
var (
	// ErrNotFound: the upstream says the manifest, blob or repository does
	// not exist (404, MANIFEST_UNKNOWN, BLOB_UNKNOWN, NAME_UNKNOWN).
	ErrNotFound = errors.New("upstream: not found")
	// ErrUnauthorized: credentials missing or rejected (401 after auth).
	ErrUnauthorized = errors.New("upstream: unauthorized")
	// ErrDenied: the registry itself refused access (a 403 that carries the
	// registry's marks: a Docker-Distribution-Api-Version header or an OCI
	// error body). A 403 without them is ErrProxy.
	ErrDenied = errors.New("upstream: denied")
	// ErrProxy: the answer is not the registry's: the forward proxy (or
	// another intermediary) refused or failed the request. It covers a 407
	// Proxy Authentication Required (plain-HTTP upstreams, where the proxy
	// answers in place of the registry), any 4xx answer to CONNECT, and a
	// 403 that lacks the registry's marks (a TLS-inspecting proxy's HTML
	// policy page, a Proxy-Authenticate or X-Squid-Error answer). It comes
	// wrapped together with ErrUnavailable: a cached copy is still served
	// stale, because the registry never said no. The request is not
	// retried (Retryable is false): only the proxy's configuration or
	// credentials can fix it. errors.As(err, **StatusError) gives the status.
	ErrProxy = errors.New("upstream: the forward proxy refused or failed the request")
	// ErrTooManyRequests: rate limited (429) after the retry budget; see
	// RetryAfter.
	ErrTooManyRequests = errors.New("upstream: too many requests")
	// ErrUnavailable: the upstream could not be reached or failed (network
	// errors, timeouts, 5xx) after the retry budget.
	ErrUnavailable = errors.New("upstream: unavailable")
	// ErrCertificate: the upstream's TLS certificate does not verify (an
	// unknown CA, a wrong host name). It comes wrapped together with
	// ErrUnavailable, so a cached copy is still served stale; the request
	// itself is not retried, since only a config change can fix it.
	ErrCertificate = errors.New("upstream: certificate does not verify")
	// ErrTooLarge: a manifest over the size cap.
	ErrTooLarge = errors.New("upstream: manifest too large")
	// ErrDigestMismatch: the bytes do not match the digest asked for.
	ErrDigestMismatch = errors.New("upstream: digest mismatch")
	// ErrInvalid: the upstream answered something unusable (bad headers,
	// bad Content-Range, unparseable body).
	ErrInvalid = errors.New("upstream: invalid response")
	// ErrRangeNotSatisfiable: the upstream answered 416 to a ranged blob
	// GET; for a resume at the blob's end this means every byte already
	// arrived (the caller checks its digest). Not temporary.
	ErrRangeNotSatisfiable = errors.New("upstream: range not satisfiable")
	// ErrForbiddenAddress: the upstream pointed Stowage at a loopback,
	// private, link-local or shared (CGNAT) address other than its own
	// endpoints (a token realm, a blob redirect, a name that resolves
	// there) and the upstream is not configured with internal: true. A
	// configuration matter: not temporary, not retried.
	ErrForbiddenAddress = errors.New("upstream: internal address not allowed for this upstream (set internal: true)")
)

// RetryAfter returns the wait an upstream asked for in a 429 or 503
// (Retry-After), if err carries one.
func RetryAfter(err error) (time.Duration, bool) {
	var e *StatusError
	if errors.As(err, &e) && e.RetryAfter > 0 {
		return e.RetryAfter, true
	}
	return 0, false
}

// Temporary reports whether err may go away by itself (network failures,
// timeouts, 408, 429, 5xx, and ErrCertificate and ErrProxy, which come
// wrapped with ErrUnavailable): a cached copy is served stale after such
// errors. Whether to try again is Retryable.
func Temporary(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrTooManyRequests)
}

// Retryable reports whether sending the request again may succeed: a
// temporary error that is not a certificate problem (ErrCertificate) or
// the forward proxy's refusal (ErrProxy), which only a configuration change
// fixes. The upstream client retries metadata requests by this rule; a
// blob fill uses it to decide whether to resume.
func Retryable(err error) bool {
	return Temporary(err) && !errors.Is(err, ErrCertificate) && !errors.Is(err, ErrProxy)
}

// StatusError is an upstream HTTP error answer. It wraps the sentinel for
// its status and never carries credentials.
type StatusError struct {
	// Status is the HTTP status code.
	Status int
	// Method and URL are the request that got the answer; the URL is
	// redacted (no query, no credentials).
	Method string
	URL    string
	// Code and Message are the first OCI error of the body, if any.
	Code    string
	Message string
	// RetryAfter is the parsed Retry-After header, if any.
	RetryAfter time.Duration
	// Err is the sentinel this status maps to.
	Err error
}

func (e *StatusError) Error() string {
	msg := e.Err.Error() + ": status " + strconv.Itoa(e.Status)
	if e.Code != "" {
		msg += " " + e.Code
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Unwrap returns the sentinel.
func (e *StatusError) Unwrap() error { return e.Err }
