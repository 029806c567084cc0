package upstream

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
)

// challengeTTL is how long an endpoint's /v2/ challenge is reused.
const challengeTTL = 10 * time.Minute

// defaultTokenLifetime is the token lifetime the token spec assumes when
// the server does not say (expires_in).
const defaultTokenLifetime = 60 * time.Second

// authTransport authenticates requests to the client's endpoints with
// go-containerregistry's transport: one authenticated RoundTripper per
// (endpoint, repository pull scope), kept in an LRU until its token
// expires; concurrent first requests for a scope share one ping and one
// token fetch. Requests to other hosts (redirect targets) pass through
// without credentials.
type authTransport struct {
	inner     http.RoundTripper // user agent + base transport
	tokens    http.RoundTripper // inner behind realmAliases, for go-containerregistry
	internal  bool              // config.Upstream.Internal: internal realms allowed
	endpoints []*endpoint
	auth      authn.Authenticator
	cache     *lru.Cache[string, scopedTransport]
	flight    singleflight.Group
	now       func() time.Time
	budget    time.Duration // bounds one shared ping+token fetch

	mu         sync.Mutex
	challenges map[string]challengeEntry // by endpoint host
}

type scopedTransport struct {
	rt      http.RoundTripper
	expires time.Time
}

type challengeEntry struct {
	ch      *transport.Challenge
	fetched time.Time
}

func newAuthTransport(inner http.RoundTripper, eps []*endpoint, auth authn.Authenticator, internal bool, size int, budget time.Duration) (*authTransport, error) {
	cache, err := lru.New[string, scopedTransport](size)
	if err != nil {
		return nil, fmt.Errorf("upstream: scope cache: %w", err)
	}
	return &authTransport{
		inner: inner, tokens: &realmAliases{inner: inner}, internal: internal,
		endpoints: eps, auth: auth, cache: cache,
		now: time.Now, budget: budget,
		challenges: map[string]challengeEntry{},
	}, nil
}

func (a *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ep := a.endpointFor(req)
	if ep == nil {
		return a.inner.RoundTrip(req)
	}
	rt, err := a.scoped(req.Context(), ep, repoFromPath(req.URL.Path))
	if err != nil {
		return nil, err
	}
	// go-containerregistry's transports set headers on the request they
	// get; give them a copy.
	return rt.RoundTrip(req.Clone(req.Context()))
}

func (a *authTransport) endpointFor(req *http.Request) *endpoint {
	for _, ep := range a.endpoints {
		if strings.EqualFold(ep.base.Host, req.URL.Host) && ep.base.Scheme == req.URL.Scheme {
			return ep
		}
	}
	return nil
}

// scoped returns the authenticated transport for (ep, repo), building it at
// most once at a time per key.
func (a *authTransport) scoped(ctx context.Context, ep *endpoint, repo string) (http.RoundTripper, error) {
	key := ep.base.Host + "\x00" + repo
	if st, ok := a.cache.Get(key); ok && a.now().Before(st.expires) {
		return st.rt, nil
	}
	// The shared fetch must not die with the first caller's context; each
	// caller still stops waiting when its own context ends.
	ch := a.flight.DoChan(key, func() (any, error) {
		if st, ok := a.cache.Get(key); ok && a.now().Before(st.expires) {
			return st.rt, nil
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.budget)
		defer cancel()
		st, err := a.build(fctx, ep, repo)
		if err != nil {
			return nil, err
		}
		a.cache.Add(key, st)
		return st.rt, nil
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(http.RoundTripper), nil
	}
}

// build pings the endpoint (cached) and, for a Bearer challenge, exchanges
// the credentials for a token of the repository's pull scope.
func (a *authTransport) build(ctx context.Context, ep *endpoint, repo string) (scopedTransport, error) {
	start := a.now()
	ch, err := a.challenge(ctx, ep)
	if err != nil {
		return scopedTransport{}, err
	}
	switch strings.ToLower(ch.Scheme) {
	case "":
		// The registry answered /v2/ with 200: no auth.
		return scopedTransport{rt: a.inner, expires: start.Add(challengeTTL)}, nil
	case "basic":
		rt, err := transport.FromToken(ep.reg, a.auth, a.inner, ch, &transport.Token{})
		if err != nil {
			return scopedTransport{}, fromTransportError(err)
		}
		return scopedTransport{rt: rt, expires: start.Add(challengeTTL)}, nil
	case "bearer":
		if ch, err = a.realmChallenge(ep, ch); err != nil {
			return scopedTransport{}, err
		}
	default:
		return scopedTransport{}, fmt.Errorf("%w: unsupported auth challenge %q", ErrUnauthorized, ch.Scheme)
	}
	var scopes []string
	if repo != "" {
		scopes = []string{"repository:" + repo + ":pull"}
	}
	tok, err := transport.Exchange(ctx, ep.reg, a.auth, a.tokens, scopes, ch)
	if err != nil {
		a.forgetChallenge(ep)
		return scopedTransport{}, fromTransportError(err)
	}
	if tok.Token == "" {
		tok.Token = tok.AccessToken
	}
	// FromToken's transport renews the token itself when the registry
	// answers 401 before we consider it expired.
	rt, err := transport.FromToken(ep.reg, a.auth, a.tokens, ch, tok)
	if err != nil {
		return scopedTransport{}, fromTransportError(err)
	}
	return scopedTransport{rt: rt, expires: start.Add(tokenLifetime(tok.ExpiresIn))}, nil
}

// tokenLifetime is how long we use a token: its lifetime minus a margin
// (a fifth, at most 30 s) so that it does not expire in flight.
func tokenLifetime(expiresIn int) time.Duration {
	d := time.Duration(expiresIn) * time.Second
	if d <= 0 {
		d = defaultTokenLifetime
	}
	return d - min(d/5, 30*time.Second)
}

// challenge returns the endpoint's /v2/ challenge, pinging at most once per
// challengeTTL (concurrent callers share one ping).
func (a *authTransport) challenge(ctx context.Context, ep *endpoint) (*transport.Challenge, error) {
	a.mu.Lock()
	ce, ok := a.challenges[ep.base.Host]
	a.mu.Unlock()
	if ok && a.now().Sub(ce.fetched) < challengeTTL {
		return ce.ch, nil
	}
	v, err, _ := a.flight.Do("ping\x00"+ep.base.Host, func() (any, error) {
		// go-containerregistry pings an insecure registry over https and
		// http at once; a plain-HTTP endpoint must see only http (no TLS
		// hello to its port, no CONNECT a corporate proxy would refuse).
		ch, err := transport.Ping(ctx, ep.reg, schemeOnly{inner: a.inner, scheme: ep.base.Scheme, host: ep.base.Host})
		if err != nil {
			return nil, fromTransportError(err)
		}
		a.mu.Lock()
		a.challenges[ep.base.Host] = challengeEntry{ch: ch, fetched: a.now()}
		a.mu.Unlock()
		return ch, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*transport.Challenge), nil
}

// schemeOnly refuses, without any network traffic, requests to host over
// another scheme than the endpoint's.
type schemeOnly struct {
	inner  http.RoundTripper
	scheme string
	host   string
}

func (s schemeOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host == s.host && req.URL.Scheme != s.scheme {
		return nil, fmt.Errorf("upstream: endpoint %s is %s only", s.host, s.scheme)
	}
	return s.inner.RoundTrip(req)
}

func (a *authTransport) forgetChallenge(ep *endpoint) {
	a.mu.Lock()
	delete(a.challenges, ep.base.Host)
	a.mu.Unlock()
}

// repoFromPath extracts the repository from /v2/<repo>/<kind>/<ref>; ""
// for other paths (the /v2/ ping).
func repoFromPath(p string) string {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return ""
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 {
		return ""
	}
	j := strings.LastIndexByte(rest[:i], '/')
	if j <= 0 {
		return ""
	}
	return rest[:j]
}
