package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
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
	serverCA    string // --server-ca: PEM CAs trusted for an https --server
	tokenFile   string
	progress    time.Duration
	wait        bool   // --wait: answer the rollout gate
	stdinName   string // --name: the name of the list read with -f -
	// stdin and stderr are the command's (set by RunE; nil: the process's
	// stdin, and no notes).
	stdin  io.Reader
	stderr io.Writer
}

func (o *prefetchOptions) register(cmd *cobra.Command, remote bool) {
	fl := cmd.Flags()
	fl.StringArrayVarP(&o.files, "file", "f", nil, "image list: images-list.txt, skopeo-sync YAML, or Kubernetes YAML/JSON (helm template, kubectl get -o yaml); - reads standard input; repeatable; default: prefetch.lists and prefetch.images of the config")
	fl.StringVar(&o.stdinName, "name", "stdin", "name of the list read from standard input (-f -): its pin, job name and the file name in its problems")
	fl.StringArrayVar(&o.platforms, "platform", nil, "only these platforms of multi-platform images, e.g. linux/amd64, linux/arm64/v8 (repeatable; default prefetch.platforms, else all)")
	fl.IntVar(&o.concurrency, "concurrency", 0, "blobs downloaded at once (default prefetch.concurrency)")
	fl.DurationVar(&o.progress, "progress-interval", 10*time.Second, "interval of progress lines when stdout is not a terminal")
	if remote { // prefetch itself (export writes a bundle instead of a report)
		fl.StringVarP(&o.output, "output", "o", "text", "report format: text or json")
		fl.StringVar(&o.server, "server", "", "URL of a running Stowage server: post the lists to its admin API and follow the jobs")
		fl.StringVar(&o.tokenFile, "token-file", "", "file holding the admin API token for --server (default: env STOWAGE_ADMIN_TOKEN)")
		fl.StringVar(&o.serverCA, "server-ca", "", "PEM file of CA certificates trusted (besides the system's) for an https:// --server")
		fl.BoolVar(&o.wait, "wait", false, "rollout gate: after the run, check that every image is fully cached (tag, manifests for the platforms, every blob) and exit 2 naming what is missing")
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

Lists are images-list.txt files, skopeo-sync YAML, or Kubernetes objects in
YAML or JSON (the format is detected); "-f -" reads standard input, so a
rollout can preload exactly what it will pull:

  helm template ./chart | proxy prefetch -f - --wait && helm upgrade ...

--wait is the rollout gate: it checks in the cache that every image is
fully there and fails otherwise, naming what is missing.
Exit status 2 means some images failed or, with --wait, are not fully
cached (see the report).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.output != "text" && o.output != "json" {
				return fmt.Errorf("--output %q: want text or json", o.output)
			}
			o.stdin, o.stderr = cmd.InOrStdin(), cmd.ErrOrStderr()
			if o.serverCA != "" && o.server == "" {
				return errors.New("--server-ca needs --server")
			}
			if o.server != "" {
				return prefetchRemote(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
			}
			cfg, err := flags.load()
			if err != nil {
				return err
			}
			rep, gate, err := prefetchLocalGate(cmd.Context(), cfg, newLogger(cfg.Log), o, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			err = writeReport(rep, o.output, cmd.OutOrStdout())
			if gate == nil {
				return err
			}
			return gateExit(err, gate, cmd.ErrOrStderr())
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
	return prefetchOptions{files: files}.loadLists(cfg)
}

// loadLists is loadLists for the command's options: "-" reads standard
// input under the --name name, and a Kubernetes input's summary is noted
// on stderr.
func (o prefetchOptions) loadLists(cfg *config.Config) (lists []prefetch.NamedList, images []string, err error) {
	files := o.files
	if len(files) == 0 {
		files, images = cfg.Prefetch.Lists, cfg.Prefetch.Images
	}
	stdinUsed := false
	for _, f := range files {
		if f == "-" {
			if stdinUsed {
				return nil, nil, errors.New("image list: - (standard input) given twice")
			}
			stdinUsed = true
		}
		data, name, err := o.readList(f)
		if err != nil {
			return nil, nil, fmt.Errorf("image list: %w", err)
		}
		l, _ := imagelist.Parse(name, bytes.NewReader(data))
		if l.Format == imagelist.FormatKubernetes {
			if len(l.Refs) == 0 {
				return nil, nil, fmt.Errorf("image list: %w", l.Err())
			}
			o.notef("prefetch: %s: %d images from Kubernetes objects: %s\n", name, len(l.Refs), l.Kubernetes)
		}
		lists = append(lists, prefetch.NamedList{Name: filepath.Base(name), List: l})
	}
	if len(lists) == 0 && len(images) == 0 {
		return nil, nil, errors.New("nothing to prefetch: give -f LIST or set prefetch.lists / prefetch.images")
	}
	return lists, images, nil
}

// prefetchLocal runs the engine on the cache directory with a proxy built
// for this run; registry options of skopeo-sync lists apply to it.
func prefetchLocal(ctx context.Context, cfg *config.Config, log *slog.Logger, o prefetchOptions, stdout io.Writer) (*prefetch.Report, error) {
	o.wait = false
	rep, _, err := prefetchLocalGate(ctx, cfg, log, o, stdout)
	return rep, err
}

// prefetchLocalGate is prefetchLocal that also answers the rollout gate
// from the cache when o.wait is set (the Gate is nil otherwise).
func prefetchLocalGate(ctx context.Context, cfg *config.Config, log *slog.Logger, o prefetchOptions, stdout io.Writer) (*prefetch.Report, *prefetch.Gate, error) {
	lists, images, err := o.loadLists(cfg)
	if err != nil {
		return nil, nil, err
	}
	if err := prefetch.CheckRegistries(cfg, lists); err != nil {
		return nil, nil, err
	}
	runCfg, notes := prefetch.WithListCredentials(cfg, lists)
	for _, n := range notes {
		log.Warn(n)
	}
	reg := prometheus.NewRegistry()
	p, store, err := newProxy(runCfg, log, reg)
	if err != nil {
		return nil, nil, err
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
		return nil, nil, err
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
	if err != nil || !o.wait {
		return rep, nil, err
	}
	gate, err := eng.Verify(ctx, rep)
	return rep, gate, err
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

// readList returns the content of the list file f, and the name its
// problems and pin carry: "-" is standard input under the --name name.
func (o prefetchOptions) readList(f string) ([]byte, string, error) {
	if f != "-" {
		data, err := os.ReadFile(f)
		return data, f, err
	}
	in := o.stdin
	if in == nil {
		in = os.Stdin
	}
	name := o.stdinName
	if name == "" {
		name = "stdin"
	}
	data, err := io.ReadAll(io.LimitReader(in, imagelist.MaxInputSize+1))
	if err == nil && len(data) > imagelist.MaxInputSize {
		err = fmt.Errorf("%w: more than %d bytes", imagelist.ErrInputTooLarge, imagelist.MaxInputSize)
	}
	if err != nil {
		return nil, name, fmt.Errorf("standard input: %w", err)
	}
	return data, name, nil
}

// notef writes a note for the user to the command's stderr, if any.
func (o prefetchOptions) notef(format string, args ...any) {
	if o.stderr != nil {
		_, _ = fmt.Fprintf(o.stderr, format, args...)
	}
}

// gateExit prints the rollout gate's verdict and returns the exit: err
// (the report's) when the gate passes, exit status 2 when it does not.
func gateExit(err error, gate *prefetch.Gate, stderr io.Writer) error {
	if werr := gate.WriteText(stderr); werr != nil {
		return werr
	}
	var ee exitError
	if err != nil && !errors.As(err, &ee) {
		return err
	}
	if !gate.Complete {
		return exitError{code: 2}
	}
	return err
}

// remoteGate prints the rollout gate a server answered for a finished job
// (its complete and missing fields) and reports whether it passed.
func remoteGate(job prefetch.Job, stderr io.Writer) bool {
	g := prefetch.Gate{Complete: job.Complete, Missing: job.Missing}
	if job.Report != nil {
		g.Images, g.Problems = len(job.Report.Images), job.Report.Problems
		g.Cached = g.Images - len(job.Missing)
	}
	_, _ = fmt.Fprintf(stderr, "job %s: ", job.ID)
	_ = g.WriteText(stderr) // stderr failing is not the gate's answer
	return job.Complete
}
