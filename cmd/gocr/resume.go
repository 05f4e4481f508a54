package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/gocr/gocr/core"
)

type resumeOptions struct {
	*globalOptions
	pids []int
}

func newCmdResume(g *globalOptions, runF func(*resumeOptions) error) *cobra.Command {
	opts := &resumeOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "resume -t PID",
		Short: "Let a stopped tree run again",
		Long: `Send SIGCONT to the tree rooted at PID: a tree left stopped by
'gocr dump --leave-stopped' or 'gocr restore --leave-stopped' goes on running.`,
		Example: "  gocr resume -t 4121",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(opts.pids) == 0 {
				return usageError{fmt.Errorf("resume: which tree? give its root with -t PID")}
			}
			if runF != nil {
				return runF(opts)
			}
			for _, pid := range opts.pids {
				n, err := core.Resume(pid)
				if err != nil {
					return err
				}
				fmt.Fprintf(opts.out, "resumed %d process(es) of the tree of %d\n", n, pid)
			}
			return nil
		},
	}
	cmd.Flags().IntSliceVarP(&opts.pids, "tree", "t", nil, "root PID of the tree to resume")
	return cmd
}
