package prefetch

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/stowage/stowage/config/imagelist"
	"github.com/stowage/stowage/proxy"
)

// item is one image to fetch, with every pin that names it.
type item struct {
	ref    imagelist.Ref
	target proxy.Target
	pins   []string
}

// key is the canonical reference.
func (it *item) key() string { return it.ref.String() }

// plan expands the request into unique images: list references, rules
// (through the upstream tag list) and inline references. Problems of the
// lists and failed expansions go into rep.Problems.
func (r *run) plan(ctx context.Context, req Request, rep *Report) []*item {
	var items []*item
	byKey := map[string]*item{}
	add := func(ref imagelist.Ref, pin string) {
		k := ref.String()
		if it, ok := byKey[k]; ok {
			if !slices.Contains(it.pins, pin) {
				it.pins = append(it.pins, pin)
			}
			return
		}
		it := &item{ref: ref, target: proxy.Target{Registry: ref.Registry, Repository: ref.Repository}, pins: []string{pin}}
		byKey[k] = it
		items = append(items, it)
	}
	lists := req.Lists
	if len(req.Images) > 0 {
		l, _ := imagelist.ParseText("inline", strings.NewReader(strings.Join(req.Images, "\n")))
		pin := req.InlinePin
		if pin == "" {
			pin = "inline"
		}
		lists = append(lists, NamedList{Name: pin, List: l})
	}
	for _, nl := range lists {
		if nl.List == nil {
			continue
		}
		for _, p := range nl.List.Problems {
			rep.Problems = append(rep.Problems, p.Error())
		}
		if !req.ListOptionsApplied {
			rep.Problems = append(rep.Problems, registryWarnings(nl.List)...)
		}
		for _, ref := range nl.List.Refs {
			add(ref, nl.Name)
		}
		for _, rule := range nl.List.Rules {
			refs, err := r.expand(ctx, rule)
			if err != nil {
				rep.Problems = append(rep.Problems, fmt.Sprintf("%s: %s: %v", rule.Source, rule, err))
				r.e.log.Warn("expanding rule", "rule", rule.String(), "err", err)
				continue
			}
			for _, ref := range refs {
				add(ref, nl.Name)
			}
		}
	}
	return items
}

// expand turns a rule into references by listing the upstream's tags now,
// so a scheduled run sees new tags.
func (r *run) expand(ctx context.Context, rule imagelist.Rule) ([]imagelist.Ref, error) {
	tags, err := r.e.f.ListTags(ctx, proxy.Target{Registry: rule.Registry, Repository: rule.Repository})
	if err != nil {
		return nil, err
	}
	matched := rule.Match(tags)
	refs := make([]imagelist.Ref, 0, len(matched))
	for _, t := range matched {
		refs = append(refs, imagelist.Ref{Registry: rule.Registry, Repository: rule.Repository, Tag: t, Source: rule.Source})
	}
	return refs, nil
}
