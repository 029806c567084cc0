package proxy

import (
	"net/http"
	"strings"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/config"
)

// request is a routed registry request after validation and upstream
// resolution: handlers never look at mux variables themselves.
type request struct {
	// name is the repository name as the client sent it ("alpine",
	// "ghcr.io/org/app").
	name string
	// host is the logical upstream registry ("docker.io").
	host string
	// repo is the repository path at the upstream ("library/alpine").
	repo string
	// cacheRepo is the repository in the cache: host + "/" + repo.
	cacheRepo string
	// tag or dgst is set for manifest, blob and referrers routes.
	tag  string
	dgst digest.Digest
	// viaNS is true when the upstream came from the ns query parameter.
	viaNS bool
}

type requestHandler func(w http.ResponseWriter, r *http.Request, q *request)

// withRequest turns mux variables into one typed request, resolving the
// upstream, before any handler logic runs.
func (p *Proxy) withRequest(h requestHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vars := mux.Vars(r)
		q, err := p.resolve(r, vars["name"])
		if err != nil {
			p.writeError(w, r, err)
			return
		}
		if ref := vars["reference"]; ref != "" {
			if strings.Contains(ref, ":") {
				d, err := digest.Parse(ref)
				if err != nil {
					p.writeError(w, r, errDigestInvalid("invalid digest: "+err.Error()))
					return
				}
				q.dgst = d
			} else {
				q.tag = ref
			}
		}
		if q.viaNS {
			w.Header().Set("OCI-Namespace", q.host)
		}
		h(w, r, q)
	})
}

// resolve picks the upstream for a request: the ns query parameter
// (containerd's mirror protocol), else a leading registry host in the path
// (/v2/ghcr.io/org/app/...), else the default upstream. A host that is not
// configured or preset is refused and never contacted.
func (p *Proxy) resolve(r *http.Request, name string) (*request, *apiError) {
	return p.resolveNS(name, r.URL.Query().Get("ns"))
}

// resolveNS is resolve for a name and an optional ns value.
func (p *Proxy) resolveNS(name, ns string) (*request, *apiError) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	q := &request{name: name, repo: name}
	if ns != "" {
		q.host, q.viaNS = config.CanonicalHost(strings.ToLower(ns)), true
	} else if first, rest, ok := strings.Cut(name, "/"); ok && looksLikeHost(first) {
		q.host, q.repo = config.CanonicalHost(first), rest
	} else {
		q.host = p.cfg.DefaultUpstream
	}
	if _, ok := p.cfg.Upstream(q.host); !ok {
		return nil, newAPIError(errcode.ErrorCodeDenied,
			"registry "+quoteShort(q.host)+" is not an upstream of this proxy", nil)
	}
	if q.host == "docker.io" && !strings.Contains(q.repo, "/") {
		q.repo = "library/" + q.repo
	}
	q.cacheRepo = cacheHost(q.host) + "/" + q.repo
	if err := checkName(q.cacheRepo); err != nil {
		return nil, err
	}
	return q, nil
}

// looksLikeHost is the Docker rule for the first path component: a registry
// host has a dot or a port, or is localhost.
func looksLikeHost(s string) bool {
	return strings.ContainsAny(s, ".:") || s == "localhost"
}

// cacheHost makes a registry host usable as a repository path component in
// the registry layout: a port's colon becomes an underscore.
func cacheHost(host string) string {
	return strings.ReplaceAll(host, ":", "_")
}
