package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/config/imagelist"
	"github.com/stowage/stowage/proxy/prefetch"
	"github.com/stowage/stowage/proxy/prefetch/progress"
)

// prefetchOptions are the flags of "prefetch" (and "export", which runs
// the same engine first).
type prefetchOptions struct {
	files       []string
	platforms   []string
	concurrency int
	output      string
	server      string
	tokenFile   string
	progress    time.Duration
}

func (o *prefetchOptions) register(cmd *cobra.Command, remote bool) {
	fl := cmd.Flags()
	fl.StringArrayVarP(&o.files, "file", "f", nil, "image list (images-list.txt form or skopeo-sync YAML), repeatable; default: prefetch.lists and prefetch.images of the config")
	fl.StringArrayVar(&o.platforms, "platform", nil, "only these platforms of multi-platform images, e.g. linux/amd64, linux/arm64/v8 (repeatable; default prefetch.platforms, else all)")
	fl.IntVar(&o.concurrency, "concurrency", 0, "blobs downloaded at once (default prefetch.concurrency)")
	fl.DurationVar(&o.progress, "progress-interval", 10*time.Second, "interval of progress lines when stdout is not a terminal")
	if remote { // prefetch itself (export writes a bundle instead of a report)
		fl.StringVarP(&o.output, "output", "o", "text", "report format: text or json")
		fl.StringVar(&o.server, "server", "", "URL of a running Stowage server: post the lists to its admin API and follow the jobs")
		fl.StringVar(&o.tokenFile, "token-file", "", "file holding the admin API token for --server (default: env STOWAGE_ADMIN_TOKEN)")
	}
}

func newPrefetchCmd() *cobra.Command {
	var flags configFlags
	var o prefetchOptions
	cmd := &cobra.Command{
		Use:   "prefetch [-f LIST]...",
		Short: "Load the images of lists into the cache (directly, or through a running server with --server)",
		Long: `Prefetch resolves every image of the lists with the cache policy and fetches
the manifests and blobs that are missing, exactly as client pulls would.
It works straight on the cache directory (--root / --config): every write is
atomic, so it is safe while a server uses the same directory. With --server
it posts the lists to the admin API of a running server instead.
Exit status 2 means some images failed (see the report).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.output != "text" && o.output != "json" {
				return fmt.Errorf("--output %q: want text or json", o.output)
			}
			if o.server != "" {
				return prefetchRemote(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
			}
			cfg, err := flags.load()
			if err != nil {
				return err
			}
			rep, err := prefetchLocal(cmd.Context(), cfg, newLogger(cfg.Log), o, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			return writeReport(rep, o.output, cmd.OutOrStdout())
		},
	}
	flags.register(cmd)
	o.register(cmd, true)
	return cmd
}

// loadLists parses the named files, or the config's lists and images when
// none are named. A file that cannot be read is an error; bad entries are
// reported by the run.
func loadLists(cfg *config.Config, files []string) (lists []prefetch.NamedList, images []string, err error) {
	if len(files) == 0 {
		files, images = cfg.Prefetch.Lists, cfg.Prefetch.Images
	}
	for _, f := range files {
		l, err := imagelist.ParseFile(f)
		if l == nil {
			return nil, nil, fmt.Errorf("image list: %w", err)
		}
		lists = append(lists, prefetch.NamedList{Name: filepath.Base(f), List: l})
	}
	if len(lists) == 0 && len(images) == 0 {
		return nil, nil, errors.New("nothing to prefetch: give -f LIST or set prefetch.lists / prefetch.images")
	}
	return lists, images, nil
}

// prefetchLocal runs the engine on the cache directory with a proxy built
// for this run; registry options of skopeo-sync lists apply to it.
func prefetchLocal(ctx context.Context, cfg *config.Config, log *slog.Logger, o prefetchOptions, stdout io.Writer) (*prefetch.Report, error) {
	lists, images, err := loadLists(cfg, o.files)
	if err != nil {
		return nil, err
	}
	if err := prefetch.CheckRegistries(cfg, lists); err != nil {
		return nil, err
	}
	runCfg, notes := prefetch.WithListCredentials(cfg, lists)
	for _, n := range notes {
		log.Warn(n)
	}
	reg := prometheus.NewRegistry()
	p, store, err := newProxy(runCfg, log, reg)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	defer p.Close()
	cleanLeftovers(ctx, store, log)
	concurrency := o.concurrency
	if concurrency == 0 {
		concurrency = cfg.Prefetch.Concurrency
	}
	eng, err := prefetch.New(p, store, prefetch.WithLogger(log), prefetch.WithRegisterer(reg),
		prefetch.WithConcurrency(concurrency))
	if err != nil {
		return nil, err
	}
	plats := o.platforms
	if len(plats) == 0 {
		plats = cfg.Prefetch.Platforms
	}
	var disp progress.Display
	if o.output == "text" {
		disp = progress.New(ctx, stdout, o.progress)
	} else {
		disp = progress.NewLines(io.Discard, time.Hour)
	}
	rep, err := eng.Run(ctx, prefetch.Request{Lists: lists, Images: images, Platforms: plats,
		ListOptionsApplied: true}, disp)
	disp.Stop()
	return rep, err
}

// writeReport prints the report and turns failures into exit status 2.
func writeReport(rep *prefetch.Report, format string, w io.Writer) error {
	var err error
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = rep.WriteText(w)
	}
	if err != nil {
		return err
	}
	if !rep.OK() {
		return exitError{code: 2}
	}
	return nil
}
