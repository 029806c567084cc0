package prefetch

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/Masterminds/semver/v3"

	"github.com/stowage/stowage/config/imagelist"
)

// wireRequest is a Request as the shared job list keeps it, so that
// another replica can resume the job: the parsed lists (references, rules,
// problems), never their registry options — a list's credentials are not
// used by a server's jobs (they are reported as not applied, and that
// report is kept here as a problem) and never leave the process.
type wireRequest struct {
	Lists     []wireList `json:"lists,omitempty"`
	Images    []string   `json:"images,omitempty"`
	InlinePin string     `json:"inline_pin,omitempty"`
	Platforms []string   `json:"platforms,omitempty"`
	NoPins    bool       `json:"no_pins,omitempty"`
	Applied   bool       `json:"list_options_applied,omitempty"`
}

type wireList struct {
	Name     string          `json:"name"`
	Refs     []imagelist.Ref `json:"refs,omitempty"`
	Rules    []wireRule      `json:"rules,omitempty"`
	Problems []wireProblem   `json:"problems,omitempty"`
}

type wireRule struct {
	Registry   string             `json:"registry"`
	Repository string             `json:"repository"`
	Kind       imagelist.RuleKind `json:"kind"`
	Pattern    string             `json:"pattern,omitempty"`
	Source     imagelist.Source   `json:"source"`
}

type wireProblem struct {
	Source imagelist.Source `json:"source"`
	Msg    string           `json:"msg"`
}

// encodeRequest is the shared list's form of req.
func encodeRequest(req Request) ([]byte, error) {
	w := wireRequest{Images: req.Images, InlinePin: req.InlinePin, Platforms: req.Platforms, NoPins: req.NoPins,
		Applied: req.ListOptionsApplied}
	for _, nl := range req.Lists {
		wl := wireList{Name: nl.Name}
		if l := nl.List; l != nil {
			wl.Refs = l.Refs
			for _, r := range l.Rules {
				wr := wireRule{Registry: r.Registry, Repository: r.Repository, Kind: r.Kind, Source: r.Source}
				switch {
				case r.Kind == imagelist.TagRegex && r.TagRegex != nil:
					wr.Pattern = r.TagRegex.String()
				case r.Kind == imagelist.Semver && r.Semver != nil:
					wr.Pattern = r.Semver.String()
				}
				wl.Rules = append(wl.Rules, wr)
			}
			for _, p := range l.Problems {
				msg := "problem"
				if p.Err != nil {
					msg = p.Err.Error()
				}
				wl.Problems = append(wl.Problems, wireProblem{Source: p.Source, Msg: msg})
			}
			if !req.ListOptionsApplied {
				wl.Problems = append(wl.Problems, registryProblems(l)...)
			}
		}
		w.Lists = append(w.Lists, wl)
	}
	return json.Marshal(w)
}

// decodeRequest rebuilds a Request from encodeRequest's form.
func decodeRequest(b []byte) (Request, error) {
	var w wireRequest
	if err := json.Unmarshal(b, &w); err != nil {
		return Request{}, fmt.Errorf("prefetch: job request: %w", err)
	}
	req := Request{Images: w.Images, InlinePin: w.InlinePin, Platforms: w.Platforms, NoPins: w.NoPins,
		ListOptionsApplied: w.Applied}
	for _, wl := range w.Lists {
		l := &imagelist.List{Refs: wl.Refs}
		for _, wr := range wl.Rules {
			r := imagelist.Rule{Registry: wr.Registry, Repository: wr.Repository, Kind: wr.Kind, Source: wr.Source}
			var err error
			switch wr.Kind {
			case imagelist.TagRegex:
				r.TagRegex, err = regexp.Compile(wr.Pattern)
			case imagelist.Semver:
				r.Semver, err = semver.NewConstraint(wr.Pattern)
			}
			if err != nil {
				return Request{}, fmt.Errorf("prefetch: job request: rule %s: %w", wr.Source, err)
			}
			l.Rules = append(l.Rules, r)
		}
		for _, p := range wl.Problems {
			l.Problems = append(l.Problems, imagelist.Problem{Source: p.Source, Err: errors.New(p.Msg)})
		}
		req.Lists = append(req.Lists, NamedList{Name: wl.Name, List: l})
	}
	return req, nil
}
