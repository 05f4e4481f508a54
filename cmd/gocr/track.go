package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/gocr/gocr/core"
)

type trackOptions struct {
	*globalOptions
	pids  []int
	show  bool
	reset bool
	json  bool
}

func newCmdTrack(g *globalOptions, runF func(*trackOptions) error) *cobra.Command {
	opts := &trackOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "track -t PID [--show] [--reset]",
		Short: "Reset the memory tracking of a running tree, or show what it wrote since",
		Long: `Without --show: reset the memory tracking of the tree rooted at PID now (the tree is
frozen for the moment it takes), writing no image. From then on the kernel marks each page
the processes write. --show lists the pages written since the last reset (ranges and
counts, per process and mapping) without freezing anything; --show --reset shows, then
resets. 'gocr dump --tracked -R' writes only those pages into an image.`,
		Example: `  gocr track -t 4121                  # reset
  gocr track -t 4121 --show           # what was written since
  gocr dump -t 4121 -D /tmp/delta --tracked -R`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(opts.pids) == 0 {
				return usageError{fmt.Errorf("track: which tree? give its root with -t PID")}
			}
			if !opts.show {
				opts.reset = true
			}
			if runF != nil {
				return runF(opts)
			}
			return trackRun(cmd, opts)
		},
	}
	f := cmd.Flags()
	f.IntSliceVarP(&opts.pids, "tree", "t", nil, "root PID of a tree (repeatable, or comma-separated)")
	f.BoolVar(&opts.show, "show", false, "list the pages written since the last reset")
	f.BoolVar(&opts.reset, "reset", false, "with --show: reset after showing")
	f.BoolVar(&opts.json, "json", false, "print the result as JSON")
	return cmd
}

func trackRun(cmd *cobra.Command, opts *trackOptions) error {
	rep, err := core.Track(cmd.Context(), core.TrackOptions{Roots: opts.pids, Reset: opts.reset})
	if err != nil {
		return err
	}
	if opts.json {
		if !opts.show {
			return json.NewEncoder(opts.out).Encode(map[string]any{"reset": len(rep.Processes)})
		}
		return json.NewEncoder(opts.out).Encode(rep)
	}
	if opts.show {
		for _, p := range rep.Processes {
			state := "tracked"
			if !p.Tracked {
				state = "not tracked (no reset yet): every page counts"
			}
			fmt.Fprintf(opts.out, "pid %d: %d page(s) written, %s (%s)\n", p.Pid, p.Pages, humanBytes(p.Bytes), state)
			for _, m := range p.Mappings {
				if m.Pages == 0 && m.Tracked {
					continue
				}
				note := ""
				if p.Tracked && !m.Tracked {
					note = "  (mapped since the reset: all of it)"
				}
				fmt.Fprintf(opts.out, "  %012x-%012x %-8s %6d page(s)%s\n", m.Start, m.End, m.Name, m.Pages, note)
				for _, r := range m.Written {
					fmt.Fprintf(opts.out, "    %012x-%012x %6d\n", r[0], r[1], (r[1]-r[0])/4096)
				}
			}
		}
	}
	if opts.reset {
		fmt.Fprintf(opts.out, "reset the memory tracking of %d process(es)\n", len(rep.Processes))
	}
	return nil
}
