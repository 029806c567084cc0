package proxy

import (
	"net/http"
	"strings"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/distribution/reference"
	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"
)

// Route names, used as the "route" metric label and in the access log.
const (
	routeBase      = "base"
	routeCatalog   = "catalog"
	routeManifest  = "manifest"
	routeBlob      = "blob"
	routeUpload    = "upload"
	routeTags      = "tags"
	routeReferrers = "referrers"
	routeHealth    = "healthz"
	routeReady     = "readyz"
	routeMetrics   = "metrics"
	routeNotFound  = "not_found"
)

var (
	namePat = reference.NameRegexp.String()
	tagPat  = reference.TagRegexp.String()
	dgstPat = reference.DigestRegexp.String()
)

// newRouter builds the per-instance router. Name and reference variables are
// constrained by the reference grammar, so a handler only sees well-formed
// input; everything else falls through to diagnose, which says precisely
// what is wrong.
func (p *Proxy) newRouter() *mux.Router {
	r := mux.NewRouter()
	r.StrictSlash(false)
	r.SkipClean(true) // never redirect: "/v2/../x" must be refused, not cleaned
	read := []string{http.MethodGet, http.MethodHead}

	r.Handle("/healthz", p.instrument(routeHealth, http.HandlerFunc(p.serveHealth))).Methods(read...)
	r.Handle("/readyz", p.instrument(routeReady, http.HandlerFunc(p.serveReady))).Methods(read...)
	r.Handle("/metrics", p.instrument(routeMetrics, p.metricsHandler)).Methods(read...)

	v2 := r.PathPrefix("/v2").Subrouter()
	v2.Handle("/", p.instrument(routeBase, http.HandlerFunc(p.serveBase))).Methods(read...)
	v2.Handle("/_catalog", p.instrument(routeCatalog, http.HandlerFunc(p.serveCatalog))).Methods(http.MethodGet)
	v2.Handle("/{name:"+namePat+"}/manifests/{reference:"+tagPat+"|"+dgstPat+"}",
		p.instrument(routeManifest, p.withRequest(p.serveManifest))).Methods(read...)
	v2.Handle("/{name:"+namePat+"}/blobs/uploads/", p.instrument(routeUpload, http.HandlerFunc(p.serveUnsupported)))
	v2.Handle("/{name:"+namePat+"}/blobs/uploads/{uuid:[^/]+}", p.instrument(routeUpload, http.HandlerFunc(p.serveUnsupported)))
	v2.Handle("/{name:"+namePat+"}/blobs/{reference:"+dgstPat+"}",
		p.instrument(routeBlob, p.withRequest(p.serveBlob))).Methods(read...)
	v2.Handle("/{name:"+namePat+"}/tags/list", p.instrument(routeTags, p.withRequest(p.serveTags))).Methods(http.MethodGet)
	v2.Handle("/{name:"+namePat+"}/referrers/{reference:"+dgstPat+"}",
		p.instrument(routeReferrers, p.withRequest(p.serveReferrers))).Methods(http.MethodGet)

	r.MethodNotAllowedHandler = p.instrument(routeNotFound, http.HandlerFunc(p.serveUnsupported))
	r.NotFoundHandler = p.instrument(routeNotFound, http.HandlerFunc(p.diagnose))
	return r
}

func (p *Proxy) serveUnsupported(w http.ResponseWriter, r *http.Request) {
	p.writeError(w, r, errUnsupported(r.Method))
}

// serveBase answers the API version check every client starts with.
func (p *Proxy) serveBase(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte("{}"))
	}
}

func (p *Proxy) serveHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte("ok\n"))
	}
}

// diagnose explains a request no route matched: a write verb is
// UNSUPPORTED, a malformed name, tag or digest gets its own code, and any
// other path is a 404 with an OCI body.
func (p *Proxy) diagnose(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if !strings.HasPrefix(path, "/v2/") {
		p.writeError(w, r, newAPIError(errcode.ErrorCodeUnsupported, "not found", nil).withStatus(http.StatusNotFound))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		p.writeError(w, r, errUnsupported(r.Method))
		return
	}
	p.writeError(w, r, diagnosePath(strings.TrimPrefix(path, "/v2/")))
}

// diagnosePath finds the most specific reason a /v2/ path is invalid.
func diagnosePath(rest string) *apiError {
	for _, sep := range []string{"/manifests/", "/blobs/", "/referrers/", "/tags/"} {
		i := strings.LastIndex(rest, sep)
		if i < 0 {
			continue
		}
		name, ref := rest[:i], rest[i+len(sep):]
		if err := checkName(name); err != nil {
			return err
		}
		switch sep {
		case "/manifests/":
			if strings.Contains(ref, ":") {
				if _, err := digest.Parse(ref); err != nil {
					return errDigestInvalid("invalid digest " + quoteShort(ref))
				}
			}
			// The spec's only failure for a manifest GET/HEAD is 404: a
			// reference that cannot be a tag names no manifest.
			return newAPIError(errcode.ErrorCodeManifestUnknown, "manifest unknown: "+quoteShort(ref)+" is not a valid tag or digest", nil)
		case "/blobs/", "/referrers/":
			return errDigestInvalid("invalid digest " + quoteShort(ref))
		}
	}
	return newAPIError(errcode.ErrorCodeNameUnknown, "no such endpoint", nil).withStatus(http.StatusNotFound)
}

// checkName validates a repository name against the reference grammar.
func checkName(name string) *apiError {
	if len(name) > reference.RepositoryNameTotalLengthMax {
		return errNameInvalid("repository name longer than 255 characters")
	}
	if !anchoredName(name) {
		return errNameInvalid("invalid repository name " + quoteShort(name))
	}
	return nil
}

func checkTag(tag string) *apiError {
	loc := reference.TagRegexp.FindStringIndex(tag)
	if loc == nil || loc[0] != 0 || loc[1] != len(tag) {
		return newAPIError(errcode.ErrorCodeTagInvalid, "invalid tag "+quoteShort(tag), nil).withStatus(http.StatusBadRequest)
	}
	return nil
}

func anchoredName(name string) bool {
	loc := reference.NameRegexp.FindStringIndex(name)
	return loc != nil && loc[0] == 0 && loc[1] == len(name)
}

func quoteShort(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return "\"" + strings.ToValidUTF8(s, "?") + "\""
}

func (e *apiError) withStatus(status int) *apiError {
	e.status = status
	return e
}
