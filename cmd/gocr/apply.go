package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/gocr/gocr/core"
)

type applyOptions struct {
	*globalOptions
	pid  int
	dir  string
	json bool
}

func newCmdApply(g *globalOptions, runF func(*applyOptions) error) *cobra.Command {
	opts := &applyOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "apply -t PID -D DIR",
		Short: "Write an image's memory back into the live tree it was taken from",
		Long: `Roll a running tree back to the memory of an image of itself, without restarting it:
the tree is frozen, its private memory is made the image's (a full or incremental image:
all of it, pages written since the dump put back and pages the image does not hold dropped;
a --tracked image: its pages only), and it goes on from where it is, registers, files and
the rest as they are now. The address space must be the image's, mapping for mapping
(exit 7 otherwise, naming the mapping, nothing written). Should gocr die while writing, the
tree is killed rather than left half rolled back.`,
		Example: `  gocr dump -t 4121 -D /tmp/base -R
  gocr apply -t 4121 -D /tmp/base`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.pid == 0 {
				return usageError{fmt.Errorf("apply: which tree? give its root with -t PID")}
			}
			if opts.dir == "" {
				return usageError{fmt.Errorf("apply: which image? give it with -D DIR")}
			}
			if runF != nil {
				return runF(opts)
			}
			st, err := core.Apply(cmd.Context(), core.ApplyOptions{Root: opts.pid, Dir: opts.dir})
			if err != nil {
				return err
			}
			if opts.json {
				return json.NewEncoder(opts.out).Encode(st)
			}
			fmt.Fprintf(opts.out, "applied %s to %d process(es): %d page(s) written, %d dropped, frozen %s\n",
				opts.dir, st.Processes, st.Pages, st.Dropped, st.Frozen.Round(1e5))
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVarP(&opts.pid, "tree", "t", 0, "root PID of the tree the image was taken from")
	f.StringVarP(&opts.dir, "images-dir", "D", "", "the image to apply")
	f.BoolVar(&opts.json, "json", false, "print the result as JSON")
	return cmd
}
