package proxy

import (
	"context"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/upstream"
)

// Manifest is a manifest as the cache holds it.
type Manifest struct {
	Digest    digest.Digest
	MediaType string
	Body      []byte
}

// Target names a repository at an upstream, as a client would address it
// through the proxy: Registry is a registry host ("docker.io", "ghcr.io"),
// Repository the path there ("library/alpine"; Docker Hub single names get
// "library/" added).
type Target struct {
	Registry   string
	Repository string
}

// request turns a Target into the internal request, applying the same
// resolution and validation as an HTTP request.
func (p *Proxy) target(t Target) (*request, error) {
	if t.Registry == "" {
		t.Registry = p.cfg.DefaultUpstream
	}
	q, aerr := p.resolveNS(t.Repository, t.Registry)
	if aerr != nil {
		return nil, aerr
	}
	return q, nil
}

// EnsureManifest returns a manifest by tag or digest through the same cache
// policy as a client pull (tag TTL, revalidation, stale serving), fetching
// and storing it on a miss. Prefetch uses it.
func (p *Proxy) EnsureManifest(ctx context.Context, t Target, ref string) (*Manifest, error) {
	q, err := p.target(t)
	if err != nil {
		return nil, err
	}
	var m *resolvedManifest
	if d, ok := digestRef(ref); ok {
		q.dgst = d
		m, err = p.manifestByDigest(ctx, q)
	} else {
		if checkTag(ref) != nil {
			return nil, fmt.Errorf("invalid tag %q", ref)
		}
		q.tag = ref
		m, err = p.manifestByTag(ctx, q)
	}
	if err != nil {
		return nil, err
	}
	return &Manifest{Digest: m.dgst, MediaType: m.mediaType, Body: m.body}, nil
}

// EnsureBlob makes sure a blob is committed in the cache, sharing the one
// fill per digest with clients pulling it at the same time. It reports
// whether the bytes came from the upstream (false: already cached).
// progress, if not nil, is called with the byte counts as they arrive from
// the upstream (deltas; their sum never exceeds the blob's size).
func (p *Proxy) EnsureBlob(ctx context.Context, t Target, d digest.Digest, progress func(delta int64)) (fromUpstream bool, err error) {
	q, err := p.target(t)
	if err != nil {
		return false, err
	}
	if err := d.Validate(); err != nil {
		return false, err
	}
	q.dgst = d
	return p.fetchBlob(ctx, q, progress)
}

// ListTags lists a repository's tags at its upstream (all pages).
func (p *Proxy) ListTags(ctx context.Context, t Target) ([]string, error) {
	q, err := p.target(t)
	if err != nil {
		return nil, err
	}
	reg, err := p.upstream(q.host)
	if err != nil {
		return nil, err
	}
	var tags []string
	last := ""
	for range 1000 { // bounded: 1000 pages
		page, err := reg.Tags(ctx, q.repo, 1000, last)
		if err != nil {
			return nil, err
		}
		tags = append(tags, page.Tags...)
		if page.Next == "" || page.Next == last {
			return tags, nil
		}
		last = page.Next
	}
	return nil, errors.Join(upstream.ErrInvalid, errors.New("tags/list: more than 1000 pages"))
}
