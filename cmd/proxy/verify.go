package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/stowage/stowage/storage"
)

func newVerifyCmd() *cobra.Command {
	var (
		flags  configFlags
		repair bool
	)
	cmd := &cobra.Command{
		Use:   "verify [--repair]",
		Short: "Re-hash every blob and check every link and tag record",
		Long: `verify re-hashes every cached blob against its digest and checks every
repository's _layers links, manifest revision links and tags (current link,
index entries, fetched-at record): a link that is not a digest, names another
digest than its directory, or points at a missing blob or manifest is reported.

With --repair it removes what it reports (a corrupt blob with its links first,
so the links that leaves dangling go in the same run); the next pull fetches
the content again. It is safe while a server runs on the same root.

Lines starting "note:" are what a write interrupted by a crash left and the
server handles (a tag whose first write stopped before its current link, a
retag that stopped between its time record and its link): not corruption.
--repair removes the first kind once it is older than 15 minutes.

Exit status: 0 when everything is sound (notes included), 1 when problems
were found (also when --repair removed them all), and 1 with an error
message when the check itself could not run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
			out := cmd.OutOrStdout()
			res, err := store.Verify(cmd.Context(), storage.VerifyOptions{
				Repair: repair,
				Report: func(p storage.Problem) { _, _ = fmt.Fprintln(out, p) },
			})
			if err != nil {
				return err
			}
			repaired, failed := 0, 0
			for _, p := range append(res.Problems, res.Notes...) {
				switch {
				case p.Repaired:
					repaired++
				case p.RepairErr != nil:
					failed++
				}
			}
			_, _ = fmt.Fprintf(out, "verify: %d blobs, %d links, %d tags checked; %d problems", res.Blobs, res.Links, res.Tags, len(res.Problems))
			if len(res.Notes) > 0 {
				_, _ = fmt.Fprintf(out, ", %d notes", len(res.Notes))
			}
			if repair {
				_, _ = fmt.Fprintf(out, ", %d removed, %d could not be removed", repaired, failed)
			}
			_, _ = fmt.Fprintln(out)
			if len(res.Problems) > 0 {
				return exitError{code: 1}
			}
			return nil
		},
	}
	flags.register(cmd)
	cmd.Flags().BoolVar(&repair, "repair", false, "remove what is corrupt or dangling, so the next pull fetches it again")
	return cmd
}
