package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// DefaultManifestAccept is the Accept list used when the caller passes nil:
// OCI manifest and index, Docker v2 manifest and manifest list. Docker
// schema 1 is not asked for: the proxy does not cache it (distribution v3
// dropped it), and a registry that can convert then sends schema 2.
var DefaultManifestAccept = []string{
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.docker.distribution.manifest.v2+json",
}

// GetManifest implements Registry.
func (c *Client) GetManifest(ctx context.Context, repo, ref string, accept []string) (*Manifest, error) {
	return c.manifest(ctx, http.MethodGet, repo, ref, accept)
}

// HeadManifest implements Registry.
func (c *Client) HeadManifest(ctx context.Context, repo, ref string, accept []string) (*Manifest, error) {
	return c.manifest(ctx, http.MethodHead, repo, ref, accept)
}

func (c *Client) manifest(ctx context.Context, method, repo, ref string, accept []string) (*Manifest, error) {
	want, byDigest, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	if len(accept) == 0 {
		accept = DefaultManifestAccept
	}
	resp, err := c.do(ctx, request{
		method: method, repo: repo, path: "manifests/" + ref,
		header: http.Header{"Accept": {strings.Join(accept, ", ")}},
	})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	m := &Manifest{MediaType: mediaType(resp.Header.Get("Content-Type")), Size: resp.ContentLength}
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
		d, err := digest.Parse(h)
		if err != nil {
			return nil, c.invalid("manifest %s/%s: bad Docker-Content-Digest", repo, ref)
		}
		m.Digest = d
	}
	if byDigest && m.Digest != "" && m.Digest != want {
		return nil, fmt.Errorf("upstream %s: manifest %s/%s: server says %s: %w", c.host, repo, ref, m.Digest, ErrDigestMismatch)
	}
	if method == http.MethodHead {
		if m.Digest == "" && byDigest {
			m.Digest = want
		}
		// A tag HEAD without Docker-Content-Digest leaves m.Digest "":
		// only a GET can tell what the tag points at (containerd and
		// regclient fall back the same way).
		if m.Size < 0 {
			return nil, c.invalid("manifest %s/%s: HEAD answer without Content-Length", repo, ref)
		}
		return m, nil
	}
	body, err := c.readCapped(resp, "manifest "+repo+"/"+ref)
	if err != nil {
		return nil, err
	}
	m.Body, m.Size = body, int64(len(body))
	if m.MediaType == "" {
		m.MediaType = bodyMediaType(body)
	}
	if err := verifyManifest(m, want, byDigest); err != nil {
		return nil, fmt.Errorf("upstream %s: manifest %s/%s: %w", c.host, repo, ref, err)
	}
	return m, nil
}

// verifyManifest checks the body against the digest asked for (byDigest)
// or the one the server announced, and fills m.Digest when neither exists.
func verifyManifest(m *Manifest, want digest.Digest, byDigest bool) error {
	switch {
	case byDigest:
		if !want.Algorithm().Available() || want.Algorithm().FromBytes(m.Body) != want {
			return fmt.Errorf("body does not hash to %s: %w", want, ErrDigestMismatch)
		}
		m.Digest = want
	case m.Digest != "":
		if m.Digest.Algorithm().Available() && m.Digest.Algorithm().FromBytes(m.Body) != m.Digest {
			return fmt.Errorf("body does not hash to Docker-Content-Digest %s: %w", m.Digest, ErrDigestMismatch)
		}
	default:
		m.Digest = digest.SHA256.FromBytes(m.Body)
	}
	return nil
}

// readCapped reads a manifest-like body up to the manifest size cap.
func (c *Client) readCapped(resp *response, what string) ([]byte, error) {
	max := c.opts.maxManifestSize
	if resp.ContentLength > max {
		return nil, fmt.Errorf("upstream %s: %s: %d bytes over the %d-byte cap: %w", c.host, what, resp.ContentLength, max, ErrTooLarge)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, c.red.Error(fmt.Errorf("upstream %s: %s: %w", c.host, what, err))
	}
	if int64(len(body)) > max {
		return nil, fmt.Errorf("upstream %s: %s: over the %d-byte cap: %w", c.host, what, max, ErrTooLarge)
	}
	return body, nil
}

// GetBlob implements Registry. With offset > 0 it sends "Range: bytes=N-";
// a 206 must carry "Content-Range: bytes N-.../total" (else ErrInvalid), a
// 200 means the server ignored the Range and the body starts at 0, a 416
// is ErrRangeNotSatisfiable. The request is not retried (one request per
// endpoint): the caller (the fill) retries and resumes.
func (c *Client) GetBlob(ctx context.Context, repo string, dgst digest.Digest, offset int64) (*Blob, error) {
	if err := dgst.Validate(); err != nil {
		return nil, fmt.Errorf("upstream: blob digest %q: %w", dgst, ErrInvalid)
	}
	if offset < 0 {
		return nil, fmt.Errorf("upstream: negative blob offset: %w", ErrInvalid)
	}
	h := http.Header{}
	if offset > 0 {
		h.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
	}
	// Sent once: the fill owns blob retries (it resumes from what it has),
	// so attempts: N means N downloads, not N*N.
	resp, err := c.do(ctx, request{method: http.MethodGet, repo: repo, path: "blobs/" + dgst.String(), header: h, once: true})
	if err != nil {
		return nil, err
	}
	b := &Blob{Body: resp.Body, Size: -1}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || start != offset {
			resp.Body.Close()
			return nil, c.invalid("blob %s/%s: Content-Range %q does not start at %d", repo, dgst, resp.Header.Get("Content-Range"), offset)
		}
		b.Offset, b.Size = start, total
	default:
		if resp.ContentLength >= 0 {
			b.Size = resp.ContentLength
		}
	}
	return b, nil
}

// parseContentRange parses "bytes start-end/total" (total may be "*": -1).
func parseContentRange(v string) (start, total int64, err error) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, 0, ErrInvalid
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, ErrInvalid
	}
	s, e, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, ErrInvalid
	}
	start, err1 := strconv.ParseInt(s, 10, 64)
	end, err2 := strconv.ParseInt(e, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, ErrInvalid
	}
	total = -1
	if tot != "*" {
		total, err = strconv.ParseInt(tot, 10, 64)
		if err != nil || total <= end {
			return 0, 0, ErrInvalid
		}
	}
	return start, total, nil
}

// HeadBlob implements Registry.
func (c *Client) HeadBlob(ctx context.Context, repo string, dgst digest.Digest) (int64, error) {
	if err := dgst.Validate(); err != nil {
		return 0, fmt.Errorf("upstream: blob digest %q: %w", dgst, ErrInvalid)
	}
	resp, err := c.do(ctx, request{method: http.MethodHead, repo: repo, path: "blobs/" + dgst.String()})
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.ContentLength < 0 {
		return 0, c.invalid("blob %s/%s: HEAD answer without Content-Length", repo, dgst)
	}
	return resp.ContentLength, nil
}

// Tags implements Registry.
func (c *Client) Tags(ctx context.Context, repo string, n int, last string) (*TagPage, error) {
	q := url.Values{}
	if n > 0 {
		q.Set("n", strconv.Itoa(n))
	}
	if last != "" {
		q.Set("last", last)
	}
	resp, err := c.do(ctx, request{method: http.MethodGet, repo: repo, path: "tags/list", query: q})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := c.readCapped(resp, "tags "+repo)
	if err != nil {
		return nil, err
	}
	var page TagPage
	if err := json.Unmarshal(body, &page); err != nil {
		return nil, c.invalid("tags %s: body is not a tag list", repo)
	}
	page.Next = nextLast(resp.Header.Get("Link"))
	return &page, nil
}

// nextLast extracts the "last" parameter of a Link: <...?last=X&n=Y>;
// rel="next" header.
func nextLast(link string) string {
	if u := nextLink(link); u != nil {
		return u.Query().Get("last")
	}
	return ""
}

// nextLink returns the target of a Link header's rel="next" entry, or nil.
func nextLink(link string) *url.URL {
	for part := range strings.SplitSeq(link, ",") {
		target, params, ok := strings.Cut(part, ";")
		if !ok || !strings.Contains(strings.ReplaceAll(params, " ", ""), `rel="next"`) {
			continue
		}
		u, err := url.Parse(strings.Trim(strings.TrimSpace(target), "<>"))
		if err != nil {
			continue
		}
		return u
	}
	return nil
}

// maxReferrerPages bounds how many Link pages one Referrers call follows.
const maxReferrerPages = 64

// Referrers implements Registry. An old registry without the referrers API
// answers 404: ErrNotFound (the caller falls back to the tag schema). A
// paginated answer (Link: <...>; rel="next") is followed, within the same
// referrers path, and the pages are merged into one index, so the caller
// gets the complete list; a single page is returned byte-identical. The
// pages together are capped like one manifest.
func (c *Client) Referrers(ctx context.Context, repo string, dgst digest.Digest, artifactType string) (*Manifest, error) {
	if err := dgst.Validate(); err != nil {
		return nil, fmt.Errorf("upstream: referrers digest %q: %w", dgst, ErrInvalid)
	}
	path := "referrers/" + dgst.String()
	q := url.Values{}
	if artifactType != "" {
		q.Set("artifactType", artifactType)
	}
	var (
		merged  v1.Index
		total   int64
		seen    = map[digest.Digest]bool{}
		page    int
		visited = map[string]bool{}
	)
	for {
		page++
		resp, err := c.do(ctx, request{
			method: http.MethodGet, repo: repo, path: path, query: q,
			header: http.Header{"Accept": {"application/vnd.oci.image.index.v1+json"}},
		})
		if err != nil {
			return nil, err
		}
		body, err := c.readCapped(resp, "referrers "+repo+"@"+dgst.String())
		link := resp.Header.Get("Link")
		ct := resp.Header.Get("Content-Type")
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		next := nextLink(link)
		if page == 1 && next == nil {
			mt := mediaType(ct)
			if mt == "" {
				mt = bodyMediaType(body)
			}
			return bodyManifest(mt, body), nil // one page: byte-identical
		}
		var idx v1.Index
		if err := json.Unmarshal(body, &idx); err != nil {
			return nil, c.invalid("referrers %s@%s: page %d is not an image index", repo, dgst, page)
		}
		if page == 1 {
			merged = idx
			merged.Manifests = nil
		}
		for _, d := range idx.Manifests {
			if !seen[d.Digest] {
				seen[d.Digest] = true
				merged.Manifests = append(merged.Manifests, d)
			}
		}
		if total += int64(len(body)); total > c.opts.maxManifestSize {
			return nil, fmt.Errorf("upstream %s: referrers %s@%s: pages over the %d-byte cap: %w", c.host, repo, dgst, c.opts.maxManifestSize, ErrTooLarge)
		}
		if next == nil {
			break
		}
		// Only the same referrers listing is followed: the next page is
		// asked of this endpoint with the Link's query, whatever host the
		// Link names (a registry behind a load balancer may name its
		// public one); another path is refused, a repeated page ends it.
		if !strings.HasSuffix(next.Path, "/"+repo+"/"+path) {
			return nil, c.invalid("referrers %s@%s: next page %q is outside the listing", repo, dgst, next.Redacted())
		}
		if visited[next.RawQuery] || page >= maxReferrerPages {
			return nil, c.invalid("referrers %s@%s: more than %d pages or a loop", repo, dgst, maxReferrerPages)
		}
		visited[next.RawQuery] = true
		q = next.Query()
	}
	if merged.MediaType == "" {
		merged.MediaType = v1.MediaTypeImageIndex
	}
	if merged.Manifests == nil {
		merged.Manifests = []v1.Descriptor{}
	}
	body, err := json.Marshal(merged)
	if err != nil {
		return nil, err
	}
	return bodyManifest(v1.MediaTypeImageIndex, body), nil
}

// bodyManifest describes an answer body computed or taken as is, with its
// own digest.
func bodyManifest(mediaType string, body []byte) *Manifest {
	return &Manifest{MediaType: mediaType, Body: body, Size: int64(len(body)), Digest: digest.SHA256.FromBytes(body)}
}

// parseRef says whether ref is a digest (and which).
func parseRef(ref string) (digest.Digest, bool, error) {
	if !strings.Contains(ref, ":") {
		if ref == "" {
			return "", false, fmt.Errorf("upstream: empty reference: %w", ErrInvalid)
		}
		return "", false, nil
	}
	d, err := digest.Parse(ref)
	if err != nil {
		return "", false, fmt.Errorf("upstream: reference %q: %w", ref, ErrInvalid)
	}
	return d, true, nil
}

func mediaType(ct string) string {
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		mt, _, _ = strings.Cut(ct, ";")
		return strings.TrimSpace(mt)
	}
	return mt
}

func bodyMediaType(body []byte) string {
	var v struct {
		MediaType string `json:"mediaType"`
	}
	_ = json.Unmarshal(body, &v)
	return v.MediaType
}

func (c *Client) invalid(format string, args ...any) error {
	return c.red.Error(fmt.Errorf("upstream %s: "+format+": %w", append(append([]any{c.host}, args...), ErrInvalid)...))
}
