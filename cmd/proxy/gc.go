package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/stowage/stowage/proxy/prefetch"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/storage/usage"
)

func newGCCmd() *cobra.Command {
	var (
		flags  configFlags
		dryRun bool
		grace  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "gc [--dry-run]",
		Short: "Remove blobs and manifests that no tag or pin references and nobody used lately",
		Long: `gc removes from the cache what no tag and no pin (prefetch list) references,
directly or through a manifest, and that was neither cached nor used within the
grace period (cache.evict_grace, 10m by default): unreferenced blobs with their
_layers links, and manifest revisions with their tag index entries.

It is safe while a server runs on the same root: a server persists its accesses
every minute under stowage/access/, and anything cached or used within the grace
period is kept, so a layer fetched just before its manifest stays. Whatever is
removed and still wanted is fetched again on the next pull.

It prints every item it removes ("would remove" with --dry-run) and totals.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := flags.load()
			if err != nil {
				return err
			}
			g := cfg.Cache.EvictGrace
			if cmd.Flags().Changed("grace") {
				if grace < 0 {
					return errors.New("--grace must not be negative")
				}
				g = grace
			}
			store, err := openStore(cfg)
			if err != nil {
				return err
			}
			defer store.Close()
			log := newLogger(cfg.Log)
			cleanLeftovers(cmd.Context(), store, log)
			access, _, err := usage.LoadAccess(cmd.Context(), store)
			if err != nil {
				return err
			}
			verb := "removed"
			if dryRun {
				verb = "would remove"
			}
			out := cmd.OutOrStdout()
			res, err := store.GC(cmd.Context(), storage.GCOptions{
				Grace: g, Access: access, DryRun: dryRun,
				Report: func(it storage.GCItem) {
					switch it.Kind {
					case "blob":
						_, _ = fmt.Fprintf(out, "%s blob %s (%s)\n", verb, it.Digest, prefetch.HumanBytes(it.Size))
					default:
						_, _ = fmt.Fprintf(out, "%s manifest %s@%s\n", verb, it.Repo, it.Digest)
					}
				},
			})
			_, _ = fmt.Fprintf(out, "gc: %s %d blobs (%s), %d manifest revisions, %d links; kept %d blobs\n",
				verb, res.Blobs, prefetch.HumanBytes(res.BlobBytes), res.Revisions, res.Links, res.Kept)
			return err
		},
	}
	flags.register(cmd)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print what would be removed, remove nothing")
	cmd.Flags().DurationVar(&grace, "grace", 0, "override cache.evict_grace (e.g. 1h); below 1m it is unsafe beside a running server")
	return cmd
}
