package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strconv"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// maxPage caps n in tags/list and _catalog.
const maxPage = 10000

// pageParams reads the n and last query parameters.
func pageParams(r *http.Request) (n int, last string, err *apiError) {
	qs := r.URL.Query()
	last = qs.Get("last")
	if s := qs.Get("n"); s != "" {
		v, perr := strconv.Atoi(s)
		if perr != nil || v < 0 {
			return 0, "", newAPIError(errcode.ErrorCodePaginationNumberInvalid, "invalid n: "+quoteShort(s), nil)
		}
		n = min(v, maxPage)
	}
	return n, last, nil
}

// paginate applies n/last to a sorted list; next is the last element when
// more remain.
func paginate(all []string, n int, last string) (page []string, more bool) {
	start := 0
	if last != "" {
		start = sort.SearchStrings(all, last)
		if start < len(all) && all[start] == last {
			start++
		}
	}
	page = all[start:]
	if n > 0 && len(page) > n {
		return page[:n], true
	}
	return page, false
}

func writeJSON(w http.ResponseWriter, r *http.Request, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

func setNextLink(w http.ResponseWriter, r *http.Request, n int, last string) {
	qs := r.URL.Query()
	qs.Set("last", last)
	if n > 0 {
		qs.Set("n", strconv.Itoa(n))
	}
	u := url.URL{Path: r.URL.Path, RawQuery: qs.Encode()}
	w.Header().Set("Link", "<"+u.String()+`>; rel="next"`)
}

// serveTags passes tags/list through to the upstream (cached briefly) and
// falls back to the locally known tags when the upstream is down.
func (p *Proxy) serveTags(w http.ResponseWriter, r *http.Request, q *request) {
	n, last, perr := pageParams(r)
	if perr != nil {
		p.writeError(w, r, perr)
		return
	}
	page, err := p.upstreamTags(r.Context(), q, n, last)
	if err == nil {
		if page.Next != "" {
			setNextLink(w, r, n, page.Next)
		}
		writeJSON(w, r, upstream.TagPage{Name: q.name, Tags: nonNil(page.Tags)})
		return
	}
	if !upstream.Temporary(err) {
		p.writeError(w, r, fromUpstream(q.host, kindRepo, err))
		return
	}
	local, lerr := p.store.Tags(r.Context(), q.cacheRepo)
	if lerr != nil {
		if errors.Is(lerr, storage.ErrNotFound) {
			p.writeError(w, r, fromUpstream(q.host, kindRepo, err))
		} else {
			p.writeError(w, r, lerr)
		}
		return
	}
	p.log.Warn("upstream failed; listing cached tags", "repo", q.cacheRepo, "err", err)
	tags, more := paginate(local, n, last)
	if more {
		setNextLink(w, r, n, tags[len(tags)-1])
	}
	writeJSON(w, r, upstream.TagPage{Name: q.name, Tags: nonNil(tags)})
}

func (p *Proxy) upstreamTags(ctx context.Context, q *request, n int, last string) (*upstream.TagPage, error) {
	key := q.cacheRepo + "?" + strconv.Itoa(n) + "&" + last
	ttl := p.cfg.Cache.TagsListTTL
	if ttl > 0 {
		if page, ok := p.tagPages.get(key, p.now(), ttl); ok {
			return page, nil
		}
	}
	reg, err := p.upstream(q.host)
	if err != nil {
		return nil, err
	}
	uctx, cancel := p.upstreamCtx(ctx, q.host)
	defer cancel()
	page, err := reg.Tags(uctx, q.repo, n, last)
	if err != nil {
		return nil, err
	}
	if ttl > 0 {
		p.tagPages.put(key, page, p.now(), ttl)
	}
	return page, nil
}

// serveCatalog lists the cached repositories, named as clients address them
// through the path-prefix form (<registry-host>/<repository>).
func (p *Proxy) serveCatalog(w http.ResponseWriter, r *http.Request) {
	n, last, perr := pageParams(r)
	if perr != nil {
		p.writeError(w, r, perr)
		return
	}
	repos, err := p.store.Repositories(r.Context())
	if err != nil {
		p.writeError(w, r, err)
		return
	}
	page, more := paginate(repos, n, last)
	if more {
		setNextLink(w, r, n, page[len(page)-1])
	}
	writeJSON(w, r, struct {
		Repositories []string `json:"repositories"`
	}{nonNil(page)})
}

// serveReferrers passes the OCI 1.1 referrers API through, caching each
// answer so signatures and SBOMs resolve while the upstream is away. An
// upstream without the API yields an empty index, as the spec asks.
func (p *Proxy) serveReferrers(w http.ResponseWriter, r *http.Request, q *request) {
	ctx := r.Context()
	artifactType := r.URL.Query().Get("artifactType")
	body, err := p.upstreamReferrers(ctx, q, artifactType)
	if errors.Is(err, upstream.ErrNotFound) {
		body, err = json.Marshal(v1.Index{Versioned: specsVersioned(), MediaType: v1.MediaTypeImageIndex, Manifests: []v1.Descriptor{}})
	}
	switch {
	case err == nil:
		// Rewrite the cached answer only when it changed: admission
		// controllers look signatures up on every pod, and an unchanged
		// answer needs no write (and no fsync).
		if cached, cerr := p.store.GetReferrers(ctx, q.cacheRepo, q.dgst, artifactType); cerr == nil && bytes.Equal(cached, body) {
			break
		}
		if perr := p.store.PutReferrers(ctx, q.cacheRepo, q.dgst, artifactType, body); perr != nil {
			p.log.Warn("cache referrers", "repo", q.cacheRepo, "digest", q.dgst, "err", perr)
		}
	case upstream.Temporary(err):
		cached, cerr := p.store.GetReferrers(ctx, q.cacheRepo, q.dgst, artifactType)
		if cerr != nil {
			p.writeError(w, r, fromUpstream(q.host, kindManifest, err))
			return
		}
		p.log.Warn("upstream failed; serving cached referrers", "repo", q.cacheRepo, "digest", q.dgst, "err", err)
		body = cached
	default:
		p.writeError(w, r, fromUpstream(q.host, kindManifest, err))
		return
	}
	if artifactType != "" {
		// The upstream may or may not have filtered: filter here, so the
		// header is true whatever it did.
		if filtered, ok := filterReferrers(body, artifactType); ok {
			body = filtered
			w.Header().Set("OCI-Filters-Applied", "artifactType")
		}
	}
	w.Header().Set("Content-Type", v1.MediaTypeImageIndex)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// filterReferrers keeps the descriptors of one artifact type. The body is
// returned unchanged when nothing had to go; ok is false for a body that is
// not an index.
func filterReferrers(body []byte, artifactType string) ([]byte, bool) {
	var idx v1.Index
	if err := json.Unmarshal(body, &idx); err != nil {
		return body, false
	}
	kept := make([]v1.Descriptor, 0, len(idx.Manifests))
	for _, d := range idx.Manifests {
		if d.ArtifactType == artifactType {
			kept = append(kept, d)
		}
	}
	if len(kept) == len(idx.Manifests) {
		return body, true
	}
	idx.Manifests = kept
	out, err := json.Marshal(idx)
	if err != nil {
		return body, false
	}
	return out, true
}

func (p *Proxy) upstreamReferrers(ctx context.Context, q *request, artifactType string) ([]byte, error) {
	reg, err := p.upstream(q.host)
	if err != nil {
		return nil, err
	}
	uctx, cancel := p.upstreamCtx(ctx, q.host)
	defer cancel()
	m, err := reg.Referrers(uctx, q.repo, q.dgst, artifactType)
	if err != nil {
		return nil, err
	}
	return m.Body, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
