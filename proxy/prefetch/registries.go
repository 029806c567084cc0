package prefetch

import (
	"errors"
	"fmt"
	"maps"
	"sort"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/config/imagelist"
)

// ErrUnknownRegistry marks a list that names a registry Stowage may not
// contact: neither configured under upstreams nor a preset.
var ErrUnknownRegistry = errors.New("prefetch: registry is not an upstream of this proxy")

// CheckRegistries returns an error naming every registry a list refers to
// (references, rules and skopeo-sync registry entries) that cfg does not
// allow. Stowage never contacts an unknown host, so such a list is refused
// before anything runs.
func CheckRegistries(cfg *config.Config, lists []NamedList) error {
	var errs []error
	seen := map[string]bool{}
	check := func(list, host string) {
		if seen[host] {
			return
		}
		seen[host] = true
		if _, ok := cfg.Upstream(host); !ok {
			errs = append(errs, fmt.Errorf("%w: %s (list %s); add it under upstreams in the config", ErrUnknownRegistry, host, list))
		}
	}
	for _, nl := range lists {
		if nl.List == nil {
			continue
		}
		for _, r := range nl.List.Refs {
			check(nl.Name, r.Registry)
		}
		for _, r := range nl.List.Rules {
			check(nl.Name, r.Registry)
		}
		for _, host := range sortedKeys(nl.List.Registries) {
			check(nl.Name, host)
		}
	}
	return errors.Join(errs...)
}

// WithListCredentials returns a copy of cfg in which the credentials,
// tls-verify and cert-dir settings of the lists' skopeo-sync registry entries replace
// the configured ones, for those hosts only. The prefetch command uses it
// for the proxy it builds for itself; a running server never takes
// credentials from a posted list (see registryWarnings). cert-dir becomes
// upstreams.<host>.tls.cert_dir (CAs and client certificates in the certs.d
// layout), added to what the config sets.
func WithListCredentials(cfg *config.Config, lists []NamedList) (*config.Config, []string) {
	out := *cfg
	out.Upstreams = maps.Clone(cfg.Upstreams)
	if out.Upstreams == nil {
		out.Upstreams = map[string]config.Upstream{}
	}
	var notes []string
	for _, nl := range lists {
		if nl.List == nil {
			continue
		}
		for _, host := range sortedKeys(nl.List.Registries) {
			opts := nl.List.Registries[host]
			host = config.CanonicalHost(host)
			if _, ok := cfg.Upstream(host); !ok {
				continue // refused by CheckRegistries
			}
			u := out.Upstreams[host] // the configured entry, or a bare preset
			changed := false
			if opts.Username != "" || opts.Password != "" {
				u.Auth = config.Auth{Username: opts.Username, Password: opts.Password.Reveal()}
				changed = true
				notes = append(notes, fmt.Sprintf("%s: credentials for %s taken from the list", opts.Source, host))
			}
			if opts.Insecure {
				u.TLS.InsecureSkipVerify = true
				changed = true
				notes = append(notes, fmt.Sprintf("%s: tls-verify false for %s: certificates are not verified", opts.Source, host))
			}
			if opts.CertDir != "" {
				u.TLS.CertDir = opts.CertDir
				changed = true
				notes = append(notes, fmt.Sprintf("%s: cert-dir %s for %s taken from the list", opts.Source, opts.CertDir, host))
			}
			if changed {
				out.Upstreams[host] = u
			}
		}
	}
	return &out, notes
}

// registryWarnings says which registry options of a list a run does not
// apply by itself (credentials, tls-verify, cert-dir): the engine uses the
// upstreams as configured.
func registryWarnings(l *imagelist.List) []string {
	var out []string
	for _, p := range registryProblems(l) {
		out = append(out, p.Source.String()+": "+p.Msg)
	}
	return out
}

// registryProblems are registryWarnings with their source apart.
func registryProblems(l *imagelist.List) []wireProblem {
	var out []wireProblem
	for _, host := range sortedKeys(l.Registries) {
		o := l.Registries[host]
		if o.Username != "" || o.Password != "" || o.Insecure || o.CertDir != "" {
			out = append(out, wireProblem{Source: o.Source, Msg: fmt.Sprintf(
				"registry options for %s (credentials, tls-verify, cert-dir) are not applied here; configure credentials in Stowage's config (upstreams.%s)",
				host, host)})
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
