package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stowage/stowage/storage"
)

// Bounds of a contents answer: the dashboard reads the store, and a huge
// cache must not make one request read all of it.
const (
	maxManifest     = 4 << 20
	maxConfig       = 1 << 20
	maxRepositories = 2000
	maxTags         = 500
)

// Repository is one cached repository in GET /api/v1/repositories.
type Repository struct {
	// Name is the cache repository ("docker.io/library/alpine").
	Name string `json:"name"`
	// Upstream is its registry host, Path the repository there.
	Upstream string `json:"upstream"`
	Path     string `json:"path"`
	Tags     int    `json:"tags"`
	// Pulls are the manifest GETs answered 200 (as this server counted
	// them, on top of what the persisted counts held at its start);
	// LastPull is the last one.
	Pulls    int64      `json:"pulls"`
	LastPull *time.Time `json:"last_pull,omitempty"`
}

// repoName is a cache repository name: the registry API's grammar (so no
// ".." component reaches the store's paths).
var repoName = regexp.MustCompile(`^(?:` + reference.NameRegexp.String() + `)$`)

// validRepo checks a repository name from a query parameter.
func validRepo(name string) bool { return len(name) <= 255 && repoName.MatchString(name) }

// splitRepo splits a cache repository into its upstream host (stored
// with ':' as '_') and path.
func splitRepo(name string) (string, string) {
	host, path, _ := strings.Cut(name, "/")
	return strings.ReplaceAll(host, "_", ":"), path
}

func (d *Dashboard) repositories(w http.ResponseWriter, r *http.Request) {
	q := strings.ToLower(strings.TrimSpace(r.URL.Query().Get("q")))
	names, err := d.o.Store.Repositories(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, "listing repositories: "+err.Error())
		return
	}
	out := []Repository{}
	truncated := false
	for _, n := range names {
		if q != "" && !strings.Contains(strings.ToLower(n), q) {
			continue
		}
		if len(out) == maxRepositories {
			truncated = true
			break
		}
		host, path := splitRepo(n)
		tags, _ := d.o.Store.Tags(r.Context(), n) // a repository of digests only has none
		pulls, last := d.pulls(n)
		out = append(out, Repository{Name: n, Upstream: host, Path: path, Tags: len(tags), Pulls: pulls, LastPull: last})
	}
	writeJSON(w, http.StatusOK, map[string]any{"repositories": out, "truncated": truncated})
}

// Tag is one cached tag with what its manifest says.
type Tag struct {
	Tag       string        `json:"tag"`
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"media_type,omitempty"`
	Platforms []string      `json:"platforms,omitempty"`
	Size      int64         `json:"size"` // manifests, configs and layers of the cached platforms
	Complete  bool          `json:"complete"`
	FetchedAt *time.Time    `json:"fetched_at,omitempty"`
	Pinned    bool          `json:"pinned"`
	PinnedBy  []string      `json:"pinned_by,omitempty"`
	Error     string        `json:"error,omitempty"`
}

// PullCommands pull an image through this Stowage.
type PullCommands struct {
	Docker     string `json:"docker"`
	Podman     string `json:"podman"`
	Containerd string `json:"containerd"`
}

// RepositoryDetail is GET /api/v1/repository?name=.
type RepositoryDetail struct {
	Repository
	PullHost string       `json:"pull_host"`
	Pull     PullCommands `json:"pull"`
	TagList  []Tag        `json:"tag_list"`
}

// pullHost is the host of pull commands: the configured one, or the one
// the browser used.
func (d *Dashboard) pullHost(r *http.Request) string {
	if d.o.PullHost != "" {
		return d.o.PullHost
	}
	return r.Host
}

func pullCommands(host, repo, ref string) PullCommands {
	img := host + "/" + repo + ref
	return PullCommands{
		Docker:     "docker pull " + img,
		Podman:     "podman pull --tls-verify=false " + img,
		Containerd: "ctr images pull --plain-http " + img,
	}
}

// pinIndex maps repository@digest to the pins naming it.
func (d *Dashboard) pinIndex(ctx context.Context) map[string][]string {
	idx := map[string][]string{}
	pins, err := d.o.Store.Pins(ctx)
	if err != nil {
		d.o.Logger.Warn("dashboard: reading pins", "err", err)
		return idx
	}
	for _, p := range pins {
		for _, im := range p.Images {
			k := im.Repository + "@" + string(im.Digest)
			idx[k] = append(idx[k], p.Name)
		}
	}
	return idx
}

func (d *Dashboard) repository(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if !validRepo(name) {
		writeError(w, http.StatusBadRequest, "name: want a repository name")
		return
	}
	ctx := r.Context()
	tags, err := d.o.Store.Tags(ctx, name)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		writeError(w, http.StatusInternalServerError, "listing tags: "+err.Error())
		return
	}
	if len(tags) == 0 && !d.repoExists(ctx, name) {
		writeError(w, http.StatusNotFound, "no such repository in the cache")
		return
	}
	host, path := splitRepo(name)
	pulls, last := d.pulls(name)
	det := RepositoryDetail{Repository: Repository{Name: name, Upstream: host, Path: path, Tags: len(tags), Pulls: pulls, LastPull: last},
		PullHost: d.pullHost(r), TagList: []Tag{}}
	det.Pull = pullCommands(det.PullHost, name, ":<tag>")
	pins := d.pinIndex(ctx)
	for i, t := range tags {
		if i == maxTags {
			break
		}
		det.TagList = append(det.TagList, d.tag(ctx, name, t, pins))
	}
	writeJSON(w, http.StatusOK, det)
}

func (d *Dashboard) repoExists(ctx context.Context, name string) bool {
	names, err := d.o.Store.Repositories(ctx)
	if err != nil {
		return false
	}
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

func (d *Dashboard) tag(ctx context.Context, repo, name string, pins map[string][]string) Tag {
	t := Tag{Tag: name}
	st, err := d.o.Store.GetTag(ctx, repo, name)
	if err != nil {
		t.Error = err.Error()
		return t
	}
	t.Digest = st.Digest
	if !st.FetchedAt.IsZero() {
		at := st.FetchedAt
		t.FetchedAt = &at
	}
	t.PinnedBy = pins[repo+"@"+string(st.Digest)]
	t.Pinned = len(t.PinnedBy) > 0
	m, err := d.describe(ctx, repo, st.Digest)
	if err != nil {
		t.Error = err.Error()
		return t
	}
	t.MediaType, t.Size, t.Complete = m.MediaType, m.TotalSize, m.Complete
	for _, c := range m.Manifests {
		if c.Platform != "" && c.Cached {
			t.Platforms = append(t.Platforms, c.Platform)
		}
	}
	if m.Platform != "" {
		t.Platforms = append(t.Platforms, m.Platform)
	}
	return t
}

// Layer is one blob of an image manifest.
type Layer struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"media_type,omitempty"`
	Size      int64         `json:"size"`
	Cached    bool          `json:"cached"`
}

// Child is one manifest of an index.
type Child struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"media_type,omitempty"`
	Platform  string        `json:"platform,omitempty"`
	Size      int64         `json:"size"` // the child's own total, when cached
	Cached    bool          `json:"cached"`
}

// Manifest is GET /api/v1/manifest?repo=&digest=: an image's config and
// layers, or an index's manifests.
type Manifest struct {
	Repository string        `json:"repository"`
	Digest     digest.Digest `json:"digest"`
	MediaType  string        `json:"media_type"`
	Size       int64         `json:"size"`
	Platform   string        `json:"platform,omitempty"`
	Config     *Layer        `json:"config,omitempty"`
	Layers     []Layer       `json:"layers,omitempty"`
	Manifests  []Child       `json:"manifests,omitempty"`
	// TotalSize sums the manifest, config and layers (for an index: its
	// cached children's totals).
	TotalSize int64 `json:"total_size"`
	// Complete is true when every blob (of every child) is cached.
	Complete bool         `json:"complete"`
	Pull     PullCommands `json:"pull"`
}

// rawManifest holds the fields of both image manifests and indexes.
type rawManifest struct {
	MediaType string               `json:"mediaType"`
	Config    *ocispec.Descriptor  `json:"config"`
	Layers    []ocispec.Descriptor `json:"layers"`
	Manifests []ocispec.Descriptor `json:"manifests"`
}

// describe reads a manifest (and an index's cached children, one level).
func (d *Dashboard) describe(ctx context.Context, repo string, dg digest.Digest) (*Manifest, error) {
	return d.describeDepth(ctx, repo, dg, 0)
}

func (d *Dashboard) describeDepth(ctx context.Context, repo string, dg digest.Digest, depth int) (*Manifest, error) {
	body, err := d.o.Store.ReadManifest(ctx, repo, dg, maxManifest)
	if err != nil {
		return nil, err
	}
	var raw rawManifest
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, err
	}
	m := &Manifest{Repository: repo, Digest: dg, MediaType: raw.MediaType, Size: int64(len(body)), Complete: true}
	m.TotalSize = m.Size
	if raw.Manifests != nil || raw.Config == nil {
		if m.MediaType == "" {
			m.MediaType = ocispec.MediaTypeImageIndex
		}
		for _, c := range raw.Manifests {
			ch := Child{Digest: c.Digest, MediaType: c.MediaType, Size: c.Size, Platform: platform(c.Platform)}
			if depth == 0 {
				if sub, err := d.describeDepth(ctx, repo, c.Digest, depth+1); err == nil {
					ch.Cached, ch.Size = true, sub.TotalSize
					m.TotalSize += sub.TotalSize
					m.Complete = m.Complete && sub.Complete
				}
			}
			m.Manifests = append(m.Manifests, ch)
		}
		return m, nil
	}
	if m.MediaType == "" {
		m.MediaType = ocispec.MediaTypeImageManifest
	}
	m.Config = d.layer(ctx, *raw.Config)
	m.TotalSize += m.Config.Size
	m.Complete = m.Config.Cached
	m.Platform = d.configPlatform(ctx, *m.Config)
	m.Layers = make([]Layer, 0, len(raw.Layers))
	for _, l := range raw.Layers {
		v := d.layer(ctx, l)
		m.Layers = append(m.Layers, *v)
		m.TotalSize += v.Size
		m.Complete = m.Complete && v.Cached
	}
	return m, nil
}

func (d *Dashboard) layer(ctx context.Context, desc ocispec.Descriptor) *Layer {
	l := &Layer{Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size}
	if _, err := d.o.Store.StatBlob(ctx, desc.Digest); err == nil {
		l.Cached = true
	}
	return l
}

// configPlatform reads os/architecture from a cached image config.
func (d *Dashboard) configPlatform(ctx context.Context, cfg Layer) string {
	if !cfg.Cached || cfg.Size > maxConfig {
		return ""
	}
	rc, _, err := d.o.Store.OpenBlob(ctx, cfg.Digest)
	if err != nil {
		return ""
	}
	defer rc.Close()
	var c ocispec.Image
	if err := json.NewDecoder(io.LimitReader(rc, maxConfig)).Decode(&c); err != nil {
		return ""
	}
	return platform(&c.Platform)
}

func platform(p *ocispec.Platform) string {
	if p == nil || p.OS == "" {
		return ""
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func (d *Dashboard) manifest(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	repo := q.Get("repo")
	dg, err := digest.Parse(q.Get("digest"))
	if !validRepo(repo) || err != nil {
		writeError(w, http.StatusBadRequest, "repo and a valid digest are required")
		return
	}
	m, err := d.describe(r.Context(), repo, dg)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		writeError(w, http.StatusNotFound, "manifest not in the cache")
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	m.Pull = pullCommands(d.pullHost(r), repo, "@"+string(dg))
	writeJSON(w, http.StatusOK, m)
}
