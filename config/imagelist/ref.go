package imagelist

import (
	// go-digest validates only algorithms whose hash is linked in.
	_ "crypto/sha256"
	_ "crypto/sha512"
	"fmt"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// DefaultTag is the tag a reference gets when it names neither tag nor digest.
const DefaultTag = "latest"

// dockerHub is the canonical Docker Hub host.
const dockerHub = "docker.io"

// Ref is one concrete image request.
type Ref struct {
	// Registry is the normalised registry host, e.g. "docker.io" or
	// "localhost:5000".
	Registry string
	// Repository is the path inside the registry, e.g. "library/nginx".
	Repository string
	// Tag is the tag, or "" when only a digest was given.
	Tag string
	// Digest is the pinned digest, or "" when only a tag was given.
	Digest digest.Digest
	// Section is the "##section" header the reference was under in a text
	// list; "" before any section and for skopeo-sync input.
	Section string
	// Source is where the reference was first seen.
	Source Source
}

// Name returns "registry/repository".
func (r Ref) Name() string {
	return r.Registry + "/" + r.Repository
}

// String returns the canonical form: "registry/repo:tag",
// "registry/repo@sha256:..." or "registry/repo:tag@sha256:...".
func (r Ref) String() string {
	s := r.Name()
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + string(r.Digest)
	}
	return s
}

// parseRef parses one reference the way Docker does, and fills in the
// default tag when neither tag nor digest is given.
func parseRef(s string) (Ref, error) {
	named, err := parseName(s)
	if err != nil {
		return Ref{}, err
	}
	ref := Ref{Registry: reference.Domain(named), Repository: reference.Path(named)}
	if t, ok := named.(reference.Tagged); ok {
		ref.Tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		ref.Digest = d.Digest()
	}
	if ref.Tag == "" && ref.Digest == "" {
		ref.Tag = DefaultTag
	}
	return ref, nil
}

// parseName is reference.ParseNormalizedNamed that also maps the
// registry-1.docker.io alias to docker.io (index.docker.io is already
// handled by the reference package).
func parseName(s string) (reference.Named, error) {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrInvalidReference, s, explain(s, err))
	}
	if reference.Domain(named) != "registry-1.docker.io" {
		return named, nil
	}
	rest := s[len("registry-1.docker.io"):] // "/path[:tag][@digest]"
	return parseName(dockerHub + rest)
}

// explain replaces the reference grammar's bare "invalid reference format"
// with the digest's own complaint when the digest is what is wrong.
func explain(s string, err error) error {
	if _, d, ok := strings.Cut(s, "@"); ok {
		if derr := digest.Digest(d).Validate(); derr != nil {
			return fmt.Errorf("digest %q: %w", d, derr)
		}
	}
	return err
}

// parseRepo parses "host/repo" that must carry neither tag nor digest.
func parseRepo(s string) (registry, repo string, err error) {
	named, err := parseName(s)
	if err != nil {
		return "", "", err
	}
	if !reference.IsNameOnly(named) {
		return "", "", fmt.Errorf("%w %q: want a repository without tag or digest", ErrInvalidReference, s)
	}
	return reference.Domain(named), reference.Path(named), nil
}

// isDockerHub reports whether host is one of the Docker Hub aliases.
func isDockerHub(host string) bool {
	switch host {
	case dockerHub, "index.docker.io", "registry-1.docker.io":
		return true
	}
	return false
}
