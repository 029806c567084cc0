package imagelist

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/distribution/reference"
	"go.yaml.in/yaml/v3"
)

// registry handles one top-level "host: {...}" entry.
func (p syncParser) registry(key, val *yaml.Node) {
	host := key.Value
	reg, err := registryHost(host)
	if err != nil {
		p.l.problem(p.at(key), err)
		return
	}
	opts := RegistryOptions{Source: p.at(key)}
	p.mapping(val, host, func(k, v *yaml.Node) {
		switch k.Value {
		case "images":
			p.mapping(v, "images", func(repo, tags *yaml.Node) { p.images(host, repo, tags) })
		case "images-by-tag-regex":
			p.mapping(v, "images-by-tag-regex", func(repo, re *yaml.Node) { p.byRegex(host, repo, re) })
		case "images-by-semver":
			p.mapping(v, "images-by-semver", func(repo, c *yaml.Node) { p.bySemver(host, repo, c) })
		case "credentials":
			p.credentials(v, &opts)
		case "tls-verify":
			p.tlsVerify(v, &opts)
		case "cert-dir":
			opts.CertDir, _ = p.scalar(v, "cert-dir")
		default:
			p.report(k, "%w %q in %s", ErrUnknownKey, k.Value, host)
		}
	})
	if first, dup := p.l.Registries[reg]; dup {
		p.report(key, "%w: registry %s already configured at %s; its settings are kept", ErrInvalidValue, reg, first.Source)
		return
	}
	p.l.Registries[reg] = opts
}

// registryHost validates a top-level key as a registry host and returns it
// normalised (Docker Hub aliases become docker.io).
func registryHost(host string) (string, error) {
	if host == "" || strings.Contains(host, "/") {
		return "", fmt.Errorf("%w: %q is not a registry host", ErrInvalidReference, host)
	}
	named, err := parseName(host + "/x")
	if err != nil {
		return "", fmt.Errorf("%w: %q is not a registry host", ErrInvalidReference, host)
	}
	reg := reference.Domain(named)
	if reg != host && !isDockerHub(host) {
		return "", fmt.Errorf("%w: %q is not a registry host (it reads as a %s namespace)", ErrInvalidReference, host, reg)
	}
	return reg, nil
}

// images handles "repo: [tag-or-digest, ...]"; an empty or null list asks
// for every tag.
func (p syncParser) images(host string, repoKey, tags *yaml.Node) {
	reg, repo, err := parseRepo(host + "/" + repoKey.Value)
	if err != nil {
		p.l.problem(p.at(repoKey), err)
		return
	}
	if isNull(tags) || (tags.Kind == yaml.SequenceNode && len(tags.Content) == 0) {
		p.l.Rules = append(p.l.Rules, Rule{Registry: reg, Repository: repo, Kind: AllTags, Source: p.at(repoKey)})
		return
	}
	if tags.Kind != yaml.SequenceNode {
		p.report(tags, "%w: images: %s: want a list of tags or digests", ErrInvalidValue, repoKey.Value)
		return
	}
	for _, item := range tags.Content {
		item = resolve(item)
		s, ok := p.scalar(item, "images: "+repoKey.Value)
		if !ok {
			continue
		}
		sep := ":"
		if strings.Contains(s, ":") { // tags never contain ':', digests always do
			sep = "@"
		}
		ref, err := parseRef(host + "/" + repoKey.Value + sep + s)
		if err != nil {
			p.l.problem(p.at(item), err)
			continue
		}
		ref.Source = p.at(item)
		p.l.addRef(ref)
	}
}

// byRegex handles "repo: regex" of images-by-tag-regex.
func (p syncParser) byRegex(host string, repoKey, val *yaml.Node) {
	reg, repo, err := parseRepo(host + "/" + repoKey.Value)
	if err != nil {
		p.l.problem(p.at(repoKey), err)
		return
	}
	s, ok := p.scalar(val, "images-by-tag-regex: "+repoKey.Value)
	if !ok {
		return
	}
	re, err := regexp.Compile(s)
	if err != nil {
		p.report(val, "%w: images-by-tag-regex: %s: %w", ErrInvalidValue, repoKey.Value, err)
		return
	}
	p.l.Rules = append(p.l.Rules, Rule{Registry: reg, Repository: repo, Kind: TagRegex, TagRegex: re, Source: p.at(repoKey)})
}

// bySemver handles "repo: constraint" of images-by-semver.
func (p syncParser) bySemver(host string, repoKey, val *yaml.Node) {
	reg, repo, err := parseRepo(host + "/" + repoKey.Value)
	if err != nil {
		p.l.problem(p.at(repoKey), err)
		return
	}
	s, ok := p.scalar(val, "images-by-semver: "+repoKey.Value)
	if !ok {
		return
	}
	c, err := semver.NewConstraint(s)
	if err != nil {
		p.report(val, "%w: images-by-semver: %s: constraint %q: %w", ErrInvalidValue, repoKey.Value, s, err)
		return
	}
	p.l.Rules = append(p.l.Rules, Rule{Registry: reg, Repository: repo, Kind: Semver, Semver: c, Source: p.at(repoKey)})
}

// credentials handles {username, password}. The password never appears in
// a message.
func (p syncParser) credentials(n *yaml.Node, opts *RegistryOptions) {
	p.mapping(n, "credentials", func(k, v *yaml.Node) {
		switch k.Value {
		case "username":
			opts.Username, _ = p.scalar(v, "credentials: username")
		case "password":
			pw, _ := p.scalar(v, "credentials: password")
			opts.Password = Secret(pw)
		default:
			p.report(k, "%w %q in credentials", ErrUnknownKey, k.Value)
		}
	})
}

// tlsVerify handles "tls-verify: bool"; false makes the registry Insecure.
func (p syncParser) tlsVerify(n *yaml.Node, opts *RegistryOptions) {
	var verify bool
	if n.Kind != yaml.ScalarNode || n.Decode(&verify) != nil {
		p.report(n, "%w: tls-verify: want true or false", ErrInvalidValue)
		return
	}
	opts.Insecure = !verify
}
