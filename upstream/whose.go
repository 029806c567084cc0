package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Whose answer is it? Between Stowage and a registry may sit a forward
// proxy: for a plain-HTTP upstream it answers in the registry's place, a
// TLS-inspecting proxy answers inside the tunnel, and CONNECT itself can be
// refused. Only the registry's own answer may count as the registry's word
// (a 403 makes the proxy refuse a cached tag instead of serving it stale),
// so answers are classified where they arrive, below the auth layer, for
// registry, token and redirect requests alike:
//
//   - 407 Proxy Authentication Required is always the proxy's.
//   - Any non-200 answer to CONNECT is the proxy's (the registry was never
//     reached): a 4xx is ErrProxy, a 5xx ErrUnavailable (retried: the proxy
//     could not reach the registry this time).
//   - A 403 is the registry's only when it carries the registry's marks and
//     none of a proxy's: a Docker-Distribution-Api-Version header or an OCI
//     error body ({"errors":[{"code":...}]}), and no Proxy-Authenticate or
//     X-Squid-Error header. Any other 403 (an HTML policy page, a bare
//     refusal, one with only Via) is ErrProxy. Via alone proves nothing:
//     CDNs in front of registries add it too.
//
// The proxy's answers become a *StatusError wrapping ErrProxy and
// ErrUnavailable, returned as the RoundTrip error, so no layer above (auth,
// retry) mistakes them for the registry's and none retries them.

// proxyAnswers turns forward-proxy answers into errors.
type proxyAnswers struct {
	inner http.RoundTripper
}

func (p *proxyAnswers) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := p.inner.RoundTrip(req)
	if err != nil || (resp.StatusCode != http.StatusProxyAuthRequired && resp.StatusCode != http.StatusForbidden) {
		return resp, err
	}
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if resp.StatusCode == http.StatusForbidden && rerr == nil && registryAnswer(resp.Header, body) {
		resp.Body = readCloser{Reader: io.MultiReader(bytes.NewReader(body), resp.Body), Closer: resp.Body}
		return resp, nil
	}
	resp.Body.Close()
	e := &StatusError{Status: resp.StatusCode, Method: req.Method, URL: redactURL(req.URL), Err: errProxyAnswer}
	if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		e.RetryAfter = d
	}
	e.Message = truncate(proxyMessage(resp.Header, body), 512)
	return nil, e
}

// registryAnswer reports whether a 403 is the registry's own (see above).
func registryAnswer(h http.Header, body []byte) bool {
	if h.Get("Proxy-Authenticate") != "" || h.Get("X-Squid-Error") != "" {
		return false
	}
	if h.Get("Docker-Distribution-Api-Version") != "" {
		return true
	}
	var env ociErrors
	return json.Unmarshal(body, &env) == nil && len(env.Errors) > 0 && env.Errors[0].Code != ""
}

// proxyMessage is what the error says about a proxy's answer: the squid
// error name when there is one, else a hint at the body's kind.
func proxyMessage(h http.Header, body []byte) string {
	if v := h.Get("X-Squid-Error"); v != "" {
		return "forward proxy: " + v
	}
	msg := "not an answer of the registry"
	if ct := mediaType(h.Get("Content-Type")); ct != "" {
		msg += " (" + ct + " body)"
	}
	if len(body) == 0 {
		msg += " (empty body)"
	}
	return msg
}

// connectAnswer is the http.Transport's OnProxyConnectResponse: a refused
// CONNECT becomes a *StatusError (Go would report only the status text).
func connectAnswer(_ context.Context, proxy *url.URL, req *http.Request, resp *http.Response) error {
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	e := &StatusError{Status: resp.StatusCode, Method: http.MethodConnect, URL: req.Host, Err: errProxyAnswer}
	if resp.StatusCode >= 500 {
		e.Err = ErrUnavailable
	}
	if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		e.RetryAfter = d
	}
	e.Message = "forward proxy " + redactor{}.URL(proxy) + " answered CONNECT " + req.Host + " with " + resp.Status
	return e
}

// readCloser pairs a reader with another closer.
type readCloser struct {
	io.Reader
	io.Closer
}
