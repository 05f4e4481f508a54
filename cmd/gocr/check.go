package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gocr/gocr/core"
)

type checkOptions struct {
	*globalOptions
	json bool
}

func newCmdCheck(g *globalOptions, runF func(*checkOptions) error) *cobra.Command {
	opts := &checkOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Tell which kernel features gocr uses are present here",
		Long: `Probe every kernel feature gocr uses (ptrace, clone3 with set_tid, pidfd_getfd,
PR_SET_MM_MAP, PAGEMAP_SCAN, userfaultfd write-protect, soft-dirty bits, sock_diag...) and
say, for each one missing, what it costs. Exits with 8 when a required one is missing.
To check whether an image can be restored here, use 'gocr restore --check-only -D DIR'.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return checkFeaturesRun(opts)
		},
	}
	cmd.Flags().BoolVar(&opts.json, "json", false, "print JSON")
	return cmd
}

func checkFeaturesRun(opts *checkOptions) error {
	fs := core.Features()
	var missing []string
	for _, f := range fs {
		if f.Required && !f.Present {
			missing = append(missing, f.Name)
		}
	}
	if opts.json {
		if err := json.NewEncoder(opts.out).Encode(map[string]any{"ok": len(missing) == 0, "features": fs}); err != nil {
			return err
		}
	} else {
		for _, f := range fs {
			mark, note := "yes", ""
			if !f.Present {
				mark = "NO "
				note = " - without it: " + f.Cost
			}
			req := ""
			if f.Required {
				req = " (required)"
			}
			fmt.Fprintf(opts.out, "%s  %s%s%s\n", mark, f.Name, req, note)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("check: required kernel features missing: %s: %w", strings.Join(missing, ", "), core.ErrCheckFailed)
	}
	return nil
}
