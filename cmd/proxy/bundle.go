package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/stowage/stowage/proxy/prefetch"
	"github.com/stowage/stowage/storage/bundle"
)

func newExportCmd() *cobra.Command {
	var flags configFlags
	var o prefetchOptions
	var out string
	cmd := &cobra.Command{
		Use:   "export -f LIST -o BUNDLE.tar",
		Short: "Prefetch the images of lists and write them as a registry-layout tar (for an air gap)",
		Long: `Export runs a prefetch of the lists (fetching what the cache lacks), then
writes exactly the listed images to a tar in the distribution registry layout:
each blob once, then the repositories' manifest, tag and layer links. Import it
on the other side with "proxy import", or extract it as the root of a stock
registry. "-o -" writes to standard output.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("-o BUNDLE.tar is required")
			}
			cfg, err := flags.load()
			if err != nil {
				return err
			}
			log := newLogger(cfg.Log)
			o.output = "text" // progress goes to stderr: stdout may be the tar
			rep, err := prefetchLocal(cmd.Context(), cfg, log, o, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if err := rep.WriteText(cmd.ErrOrStderr()); err != nil {
				return err
			}
			store, err := openStore(cfg)
			if err != nil {
				return err
			}
			defer store.Close()
			st, err := writeBundle(cmd, out, func(w io.Writer) (bundle.Stats, error) {
				return bundle.Export(cmd.Context(), store, w, prefetch.BundleImages(rep))
			})
			if err != nil {
				return err
			}
			_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "exported %d blobs (%s), %d links, %d tags to %s\n",
				st.Blobs, prefetch.HumanBytes(st.Bytes), st.Links, st.Tags, out)
			if !rep.OK() {
				return exitError{code: 2}
			}
			return nil
		},
	}
	flags.register(cmd)
	o.register(cmd, false)
	// -o is the bundle here, as in "docker save -o".
	cmd.Flags().StringVarP(&out, "output", "o", "", "bundle file to write (\"-\": standard output)")
	return cmd
}

// writeBundle writes to a temporary file next to path and renames it into
// place, so an interrupted export never leaves a truncated bundle.
func writeBundle(cmd *cobra.Command, path string, write func(io.Writer) (bundle.Stats, error)) (bundle.Stats, error) {
	if path == "-" {
		return write(cmd.OutOrStdout())
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return bundle.Stats{}, err
	}
	st, err := write(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
	return st, err
}

func newImportCmd() *cobra.Command {
	var flags configFlags
	cmd := &cobra.Command{
		Use:   "import BUNDLE.tar",
		Short: "Load a bundle written by export into the cache (verified; idempotent)",
		Long: `Import reads a registry-layout tar ("-": standard input) into the cache:
each blob is verified against its digest before it is committed, links are
written only for content that is present, and entries outside the registry
layout, escaping the root, or that are links or devices are refused. Imported
tags get the import time as their fetched-at time: they are served as fresh
for the tag TTL, then revalidated against the upstream (or served stale,
within cache.max_stale, while it cannot be reached). A cached tag that was
resolved after the bundle's export is kept. Importing twice is a no-op.
Safe while a server uses the same cache directory.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := flags.load()
			if err != nil {
				return err
			}
			store, err := openStore(cfg)
			if err != nil {
				return err
			}
			defer store.Close()
			cleanLeftovers(cmd.Context(), store, newLogger(cfg.Log))
			r := cmd.InOrStdin()
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			}
			st, err := bundle.Import(cmd.Context(), store, r, time.Now())
			_, _ = fmt.Fprintf(cmd.OutOrStdout(), "imported %d blobs (%s), %d already present, %d links, %d tags\n",
				st.Blobs, prefetch.HumanBytes(st.Bytes), st.BlobsPresent, st.Links, st.Tags)
			if st.TagsKept > 0 {
				_, _ = fmt.Fprintf(cmd.OutOrStdout(), "kept %d cached tags resolved after the bundle was exported\n", st.TagsKept)
			}
			for _, p := range st.Problems {
				_, _ = fmt.Fprintln(cmd.ErrOrStderr(), "problem:", p)
			}
			if err != nil {
				return fmt.Errorf("import: %d problems", len(st.Problems))
			}
			return nil
		},
	}
	flags.register(cmd)
	return cmd
}
