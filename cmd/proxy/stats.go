package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/stowage/stowage/proxy/prefetch"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/usage"
)

// cacheStats is what "proxy stats" reports (its --json form).
type cacheStats struct {
	Bytes         int64       `json:"bytes"`
	Objects       int         `json:"objects"`
	PinnedBytes   int64       `json:"pinned_bytes"`
	PinnedObjects int         `json:"pinned_objects"`
	Pins          int         `json:"pins"`
	Repositories  int         `json:"repositories"`
	TopBySize     []repoStats `json:"top_by_size"`
	// TopByPulls ranks repositories by their pulls: client GETs of a
	// manifest answered 200, as every server on this cache counted and
	// persisted them. A repository whose content is gone keeps its
	// count.
	TopByPulls []repoStats `json:"top_by_pulls"`
	// TopByUse ranks repositories by their blobs' last use (a pull served
	// from the cache or fetched), as the access log records it: the
	// cache keeps last-use times, not pull counts.
	TopByUse []repoStats `json:"top_by_recent_use"`
}

// repoStats is one repository: the bytes and blobs it links (shared blobs
// count in every repository linking them) and their last use.
type repoStats struct {
	Repo     string    `json:"repo"`
	Bytes    int64     `json:"bytes"`
	Blobs    int       `json:"blobs"`
	LastUsed time.Time `json:"last_used,omitzero"`
	Pulls    int64     `json:"pulls"`
	LastPull time.Time `json:"last_pull,omitzero"`
}

func newStatsCmd() *cobra.Command {
	var (
		flags  configFlags
		asJSON bool
		top    int
	)
	cmd := &cobra.Command{
		Use:   "stats [--json] [--top N]",
		Short: "Show the cache's size, objects, pinned bytes and its largest, most pulled and most recently used repositories",
		Long: `stats reads a cache directory (with or without a running server) and prints
its blob bytes and objects, the bytes pinned by prefetch lists, and the top
repositories by size, by pulls and by most recent use. A repository's size
counts every blob and manifest it links, so blobs shared by several
repositories count in each. A pull is a client GET of a manifest answered 200
(HEAD requests and blobs do not count); the counts of every server on the
cache are merged. Servers persist pulls and last use every minute and when
they stop.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if top < 1 {
				return fmt.Errorf("--top must be at least 1")
			}
			cfg, err := flags.load()
			if err != nil {
				return err
			}
			store, err := openStore(cfg)
			if err != nil {
				return err
			}
			defer store.Close()
			st, err := collectStats(cmd.Context(), store, top)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			return printStats(cmd.OutOrStdout(), st)
		},
	}
	flags.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of text")
	cmd.Flags().IntVar(&top, "top", 10, "repositories to list in each ranking")
	return cmd
}

// collectStats walks the blobs, the repositories' links, the pins and the
// access log.
func collectStats(ctx context.Context, store *storage.Store, top int) (*cacheStats, error) {
	st := &cacheStats{}
	sizes := map[digest.Digest]int64{}
	if err := store.WalkBlobs(ctx, func(b storage.BlobRecord) error {
		sizes[b.Digest] = b.Size
		st.Bytes += b.Size
		st.Objects++
		return nil
	}); err != nil {
		return nil, err
	}
	pins, err := store.Pins(ctx)
	if err != nil {
		return nil, err
	}
	st.Pins = len(pins)
	pinned := map[digest.Digest]bool{}
	for _, p := range pins {
		for _, d := range p.Blobs {
			if size, ok := sizes[d]; ok && !pinned[d] {
				pinned[d] = true
				st.PinnedBytes += size
				st.PinnedObjects++
			}
		}
	}
	access, _, err := usage.LoadAccess(ctx, store)
	if err != nil {
		return nil, err
	}
	pulls, err := usage.LoadPulls(ctx, store)
	if err != nil {
		return nil, err
	}
	repos, err := store.LinkedRepositories(ctx)
	if err != nil {
		return nil, err
	}
	st.Repositories = len(repos)
	all := make([]repoStats, 0, len(repos))
	for _, repo := range repos {
		c := pulls[repo]
		delete(pulls, repo)
		rs := repoStats{Repo: repo, Pulls: c.Count, LastPull: c.Last}
		seen := map[digest.Digest]bool{}
		for _, list := range []func(context.Context, string) ([]storage.LinkEntry, error){store.LayerLinks, store.RevisionLinks} {
			links, err := list(ctx, repo)
			if err != nil {
				return nil, err
			}
			for _, l := range links {
				size, ok := sizes[l.Digest]
				if !ok || seen[l.Digest] {
					continue // dangling (proxy verify reports it) or counted
				}
				seen[l.Digest] = true
				rs.Bytes += size
				rs.Blobs++
				if t := access[l.Digest]; t.After(rs.LastUsed) {
					rs.LastUsed = t
				}
			}
		}
		all = append(all, rs)
	}
	st.TopBySize = topRepos(all, top, func(a, b repoStats) bool { return a.Bytes > b.Bytes })
	pulled := make([]repoStats, 0, len(all)+len(pulls))
	for _, r := range all {
		if r.Pulls > 0 {
			pulled = append(pulled, r)
		}
	}
	for repo, c := range pulls { // pulled, nothing cached any more
		pulled = append(pulled, repoStats{Repo: repo, Pulls: c.Count, LastPull: c.Last})
	}
	st.TopByPulls = topRepos(pulled, top, func(a, b repoStats) bool { return a.Pulls > b.Pulls })
	used := make([]repoStats, 0, len(all))
	for _, r := range all {
		if !r.LastUsed.IsZero() {
			used = append(used, r)
		}
	}
	st.TopByUse = topRepos(used, top, func(a, b repoStats) bool { return a.LastUsed.After(b.LastUsed) })
	return st, nil
}

// topRepos returns the first n of rs ordered by less (ties by name).
func topRepos(rs []repoStats, n int, less func(a, b repoStats) bool) []repoStats {
	out := append([]repoStats(nil), rs...)
	sort.SliceStable(out, func(i, j int) bool {
		if less(out[i], out[j]) {
			return true
		}
		if less(out[j], out[i]) {
			return false
		}
		return out[i].Repo < out[j].Repo
	})
	return out[:min(n, len(out))]
}

func printStats(w io.Writer, st *cacheStats) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintf(tw, "cached\t%s in %d objects\n", prefetch.HumanBytes(st.Bytes), st.Objects)
	_, _ = fmt.Fprintf(tw, "pinned\t%s in %d objects (%d pins)\n", prefetch.HumanBytes(st.PinnedBytes), st.PinnedObjects, st.Pins)
	_, _ = fmt.Fprintf(tw, "repositories\t%d\n", st.Repositories)
	_, _ = fmt.Fprintf(tw, "\nlargest repositories\tbytes\tobjects\tlast used\n")
	for _, r := range st.TopBySize {
		_, _ = fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\n", r.Repo, prefetch.HumanBytes(r.Bytes), r.Blobs, lastUsed(r.LastUsed))
	}
	_, _ = fmt.Fprintf(tw, "\nmost pulled\tpulls\tbytes\tlast pull\n")
	for _, r := range st.TopByPulls {
		_, _ = fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\n", r.Repo, r.Pulls, prefetch.HumanBytes(r.Bytes), lastUsed(r.LastPull))
	}
	_, _ = fmt.Fprintf(tw, "\nmost recently used\tbytes\tobjects\tlast used\n")
	for _, r := range st.TopByUse {
		_, _ = fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\n", r.Repo, prefetch.HumanBytes(r.Bytes), r.Blobs, lastUsed(r.LastUsed))
	}
	return tw.Flush()
}

func lastUsed(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
