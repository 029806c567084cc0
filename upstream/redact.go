package upstream

import (
	"context"
	"errors"
	"net/url"
	"regexp"
	"strings"
)

// Redaction: every error the client returns and every URL it logs passes
// through a redactor, which removes
//   - query strings of URLs (signed CDN URLs carry their signature there),
//   - user:password@ in URLs (proxy URLs),
//   - Authorization-style "Bearer x" / "Basic x" values,
//   - every secret the client knows (passwords, tokens, their base64 forms).
//
// A redacted error keeps errors.Is/As working for the sentinels, context
// errors and *StatusError, but does not expose the raw cause, whose text may
// hold a secret.

const redacted = "***"

var (
	reQuery    = regexp.MustCompile(`(?i)([a-z][a-z0-9+.-]*://[^\s"'<>?#]*)\?[^\s"'<>#]*`)
	reUserinfo = regexp.MustCompile(`(?i)([a-z][a-z0-9+.-]*://)[^\s"'<>/@]*@`)
	reAuthz    = regexp.MustCompile(`(?i)\b(bearer|basic)\s+[a-z0-9._~+/=-]{8,}`)
)

// redactor removes the client's secrets from text.
type redactor struct {
	// secrets returns the current secret strings (they may rotate).
	secrets func() []string
}

// String redacts s.
func (r redactor) String(s string) string {
	s = reQuery.ReplaceAllString(s, "$1?"+redacted)
	s = reUserinfo.ReplaceAllString(s, "$1"+redacted+"@")
	s = reAuthz.ReplaceAllString(s, "$1 "+redacted)
	if r.secrets != nil {
		for _, sec := range r.secrets() {
			if len(sec) < 3 {
				continue // too short to replace without mangling the text
			}
			s = strings.ReplaceAll(s, sec, redacted)
			if esc := url.QueryEscape(sec); esc != sec {
				s = strings.ReplaceAll(s, esc, redacted)
			}
		}
	}
	return s
}

// URL renders u for logs: scheme, host and path only.
func (r redactor) URL(u *url.URL) string {
	if u == nil {
		return ""
	}
	v := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	return r.String(v.String())
}

// redactURL renders a request URL for a *StatusError: scheme, host and
// path only.
func redactURL(u *url.URL) string { return redactor{}.URL(u) }

// Error returns err with its message redacted; nil stays nil.
func (r redactor) Error(err error) error {
	if err == nil {
		return nil
	}
	var re *redactedError
	if errors.As(err, &re) && re == err { //nolint:errorlint // identity: err is itself already redacted
		return err
	}
	return &redactedError{msg: r.String(err.Error()), causes: r.safeCauses(err)}
}

// redactedError is an error whose message has been redacted.
type redactedError struct {
	msg    string
	causes []error
}

func (e *redactedError) Error() string   { return e.msg }
func (e *redactedError) Unwrap() []error { return e.causes }

// safeCauses lists what err wraps that carries no secret: our sentinels,
// the context errors and a *StatusError (server-sent code and message).
func (r redactor) safeCauses(err error) []error {
	var out []error
	var se *StatusError
	if errors.As(err, &se) {
		c := *se
		c.Message, c.URL = r.String(c.Message), r.String(c.URL)
		out = append(out, &c)
	}
	for _, s := range []error{
		ErrNotFound, ErrUnauthorized, ErrDenied, ErrTooManyRequests,
		ErrUnavailable, ErrCertificate, ErrTooLarge, ErrDigestMismatch, ErrInvalid,
		ErrProxy, ErrRangeNotSatisfiable, ErrForbiddenAddress,
		context.Canceled, context.DeadlineExceeded,
	} {
		if errors.Is(err, s) && (se == nil || !errors.Is(se, s)) {
			out = append(out, s)
		}
	}
	return out
}
