package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gocr/gocr/core"
)

type dumpOptions struct {
	*globalOptions
	pids         []int
	dir          string
	leaveRunning bool
	leaveStopped bool
	overwrite    bool
	intoDir      bool
	linkRemap    bool
	noSync       bool
	checkOnly    bool
	tcpEstab     bool
	shellJob     bool
	trackMem     bool
	tracked      bool
	compress     bool
	pageServer   string
	tokenFile    string
	preDump      bool
	parent       string
	ghostLimit   string
	skipInFlight bool
	json         bool
}

func newCmdDump(g *globalOptions, runF func(*dumpOptions) error) *cobra.Command {
	opts := &dumpOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "dump -t PID [-t PID...] -D DIR",
		Short: "Checkpoint a tree of processes into an images directory",
		Long: `Freeze the tree rooted at each PID (the process and all its descendants), write
everything about it to DIR, and then kill it (the default), leave it running
(--leave-running) or leave it stopped (--leave-stopped). If the dump fails or is
interrupted, the tree goes on running as it was and no image is left in DIR.`,
		Example: `  gocr dump -t 4121 -D /var/lib/ckpt/job1
  gocr dump -t 4121 -D /tmp/img --leave-running
  gocr dump -t 4121,5230 -D /tmp/img`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(opts.pids) == 0 {
				return usageError{fmt.Errorf("dump: which tree? give its root with -t PID")}
			}
			if opts.dir == "" && opts.pageServer == "" {
				return usageError{fmt.Errorf("dump: where to? give an images directory with -D DIR (or a page server with --page-server HOST:PORT)")}
			}
			if opts.checkOnly && opts.leaveStopped {
				return usageError{fmt.Errorf("dump: --check-only always leaves the tree running")}
			}
			if opts.leaveRunning && opts.leaveStopped {
				return usageError{fmt.Errorf("dump: --leave-running and --leave-stopped exclude each other")}
			}
			if opts.trackMem && !opts.leaveRunning && !opts.leaveStopped {
				return usageError{fmt.Errorf("dump: --track-mem is for a tree that goes on: add --leave-running (or use gocr pre-dump)")}
			}
			if opts.tracked && !opts.leaveRunning && !opts.leaveStopped {
				return usageError{fmt.Errorf("dump: a --tracked image holds only what was written since the reset and cannot be restored: add --leave-running (or --leave-stopped)")}
			}
			if runF != nil {
				return runF(opts)
			}
			return dumpRun(cmd, opts)
		},
	}
	f := cmd.Flags()
	f.IntSliceVarP(&opts.pids, "tree", "t", nil, "root PID of a tree to dump (repeatable, or comma-separated)")
	f.StringVarP(&opts.dir, "images-dir", "D", "", "directory to write the image to")
	f.BoolVarP(&opts.leaveRunning, "leave-running", "R", false, "let the tree go on running after the dump")
	f.BoolVarP(&opts.leaveStopped, "leave-stopped", "s", false, "leave the tree stopped (SIGSTOP) after the dump")
	f.BoolVar(&opts.overwrite, "overwrite", false, "replace an image already in the directory")
	f.BoolVar(&opts.intoDir, "into-dir", false, "write into the existing directory as CRIU does: it stays the same, with its other files (a log); an image there is replaced")
	f.BoolVar(&opts.noSync, "no-sync", false, "do not fsync the image (faster; unsafe when the tree is killed)")
	f.BoolVar(&opts.checkOnly, "check-only", false, "collect and check everything but memory, write a small check-only image, leave the tree running")
	f.BoolVar(&opts.tcpEstab, "tcp-established", false, "also take established TCP connections whose peer is outside the dump (TCP repair, as CRIU)")
	f.BoolVarP(&opts.shellJob, "shell-job", "j", false, "allow a tree that runs on a shell's terminal (as CRIU)")
	// CRIU needs -l to take file locks; gocr always takes them, and accepts the flag so that
	// CRIU command lines work unchanged.
	f.BoolP("file-locks", "l", false, "accepted for CRIU command lines: gocr always handles file locks")
	f.BoolVar(&opts.trackMem, "track-mem", false, "leave memory tracking on, so that a later dump with --prev-images-dir takes only what changed (as CRIU)")
	f.BoolVar(&opts.tracked, "tracked", false, "write only the pages written since the memory tracking was reset (gocr track): an image for gocr apply or gocr show, not restored itself")
	f.BoolVar(&opts.compress, "compress", false, "store the memory compressed (zstd, fastest level, on every core); restore reads it as it is")
	f.StringVar(&opts.pageServer, "page-server", "", "send the image to a gocr page-server at HOST:PORT (as CRIU); -D then keeps a local copy")
	f.StringVar(&opts.tokenFile, "auth-token-file", "", "with --page-server: the secret the page server holds")
	f.BoolVar(&opts.skipInFlight, "skip-in-flight", false, "dump listening sockets with connections not accepted yet, dropping those (their clients see a reset), as CRIU")
	f.BoolVar(&opts.linkRemap, "link-remap", false, "take files whose name was removed, while other names lead to them, through a hard link made next to the old name and removed at restore (as CRIU)")
	f.StringVar(&opts.ghostLimit, "ghost-limit", "", "largest deleted file whose content goes into the image, as CRIU (bytes, or with K, M, G; default 64M; 0: no limit)")
	f.StringVar(&opts.parent, "prev-images-dir", "", "an earlier image of the tree taken with --track-mem (relative paths from -D, as CRIU): dump only the pages written since")
	f.BoolVar(&opts.json, "json", false, "print the result as JSON")
	f.BoolVar(&opts.preDump, "pre-dump", false, "")
	f.MarkHidden("pre-dump") // set by gocr pre-dump
	return cmd
}

// newCmdPreDump is CRIU's pre-dump: a dump that leaves the tree running with its memory
// tracked, the first of a series that ends with a dump against the last one.
func newCmdPreDump(g *globalOptions, runF func(*dumpOptions) error) *cobra.Command {
	cmd := newCmdDump(g, runF)
	cmd.Use = "pre-dump -t PID [-t PID...] -D DIR [--prev-images-dir DIR]"
	cmd.Short = "Checkpoint a tree that goes on running, and track its memory for the next dump"
	cmd.Long = `As CRIU's pre-dump: the tree is frozen only while its state is collected and its memory
marked for write tracking, then goes on while its memory is written to DIR. The next dump
with --prev-images-dir DIR writes only the memory written since. Iterate while the pre-dumps
shrink, then take the final dump against the last one: it freezes the tree only for what
changed. A pre-dump image is not restored itself (its memory was read while the tree ran):
restore the final dump.`
	cmd.Example = `  gocr pre-dump -t 4121 -D /ckpt/1
  gocr pre-dump -t 4121 -D /ckpt/2 --prev-images-dir ../1
  gocr dump -t 4121 -D /ckpt/3 --prev-images-dir ../2`
	// Flags a pre-dump refuses or implies are not listed in its help (they stay accepted, so
	// that CRIU command lines with -R or --track-mem go through).
	for _, name := range []string{"leave-stopped", "check-only", "leave-running", "track-mem", "tracked"} {
		cmd.Flags().MarkHidden(name)
	}
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		f := c.Flags()
		if f.Changed("leave-stopped") || f.Changed("check-only") {
			return usageError{fmt.Errorf("pre-dump: the tree always goes on running")}
		}
		f.Set("leave-running", "true")
		f.Set("track-mem", "true")
		f.Set("pre-dump", "true")
		return run(c, args)
	}
	return cmd
}

func dumpRun(cmd *cobra.Command, opts *dumpOptions) error {
	final := core.Kill
	switch {
	case opts.leaveRunning:
		final = core.LeaveRunning
	case opts.leaveStopped:
		final = core.LeaveStopped
	}
	var ghost int64
	if opts.ghostLimit != "" {
		n, err := parseSize(opts.ghostLimit)
		if err != nil {
			return usageError{fmt.Errorf("dump: --ghost-limit: %w", err)}
		}
		if ghost = n; n == 0 {
			ghost = -1 // no limit
		}
	}
	var token []byte
	if opts.pageServer != "" {
		var err error
		if token, err = readToken(opts.tokenFile); err != nil {
			return err
		}
	}
	prog := newProgress(opts.errOut, "dump", opts.json)
	opts.log.Debug("dump", "pids", opts.pids, "dir", opts.dir, "final", final)
	stats, err := core.Dump(cmd.Context(), core.DumpOptions{
		Roots: opts.pids, Dir: opts.dir, Final: final, Overwrite: opts.overwrite, IntoDir: opts.intoDir, LinkRemap: opts.linkRemap, NoSync: opts.noSync, CheckOnly: opts.checkOnly, TCPEstablished: opts.tcpEstab, ShellJob: opts.shellJob,
		Plugins: opts.plugins, PluginDirs: opts.pluginDirs, PluginTimeout: opts.pluginTimeout, TrackMem: opts.trackMem, PreDump: opts.preDump, Tracked: opts.tracked, Compress: opts.compress, PageServer: opts.pageServer, PageServerToken: token, Parent: opts.parent, GhostLimit: ghost,
		ActionScripts: opts.actionScripts, ScriptOutput: opts.errOut, SkipInFlight: opts.skipInFlight,
		Progress: prog.update,
	})
	prog.done()
	if err != nil {
		return err
	}
	opts.log.Debug("dump done", "processes", stats.Processes, "bytes", stats.Bytes,
		"frozen", stats.Frozen, "collect", stats.Collect, "memory", stats.Memory, "commit", stats.Commit, "total", stats.Total)
	for _, w := range stats.Warnings {
		fmt.Fprintf(opts.errOut, "gocr: warning: %s\n", w)
	}
	if opts.json {
		return json.NewEncoder(opts.out).Encode(map[string]any{
			"images_dir": opts.dir, "processes": stats.Processes, "pages": stats.Pages, "bytes": stats.Bytes, "stored": stats.Stored,
			"seconds": stats.Total.Seconds(), "warnings": stats.Warnings,
		})
	}
	if opts.checkOnly {
		fmt.Fprintf(opts.out, "checked %d process(es); check-only image in %s; the tree goes on running\n", stats.Processes, opts.dir)
		return nil
	}
	stored := ""
	if opts.compress {
		stored = fmt.Sprintf(" (%s compressed)", humanBytes(stats.Stored))
	}
	where := opts.dir
	if opts.pageServer != "" {
		where = "page server " + opts.pageServer
	}
	fmt.Fprintf(opts.out, "dumped %d process(es), %s of memory%s, to %s in %s\n",
		stats.Processes, humanBytes(stats.Bytes), stored, where, stats.Total.Round(1e5))
	return nil
}

func humanBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// parseSize reads a size in bytes, with an optional K, M or G (powers of 1024).
func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (bytes, or a number with K, M or G)", s)
	}
	return n * mult, nil
}
