package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/internal/pidinit"
)

// globalOptions are the flags every command has.
type globalOptions struct {
	verbose       bool
	logFile       string
	json          bool
	plugins       []string
	pluginDirs    []string
	pluginTimeout time.Duration
	actionScripts []string
	out           io.Writer
	errOut        io.Writer
	log           *slog.Logger
}

func newRootCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gocr",
		Short: "Checkpoint and restore trees of Linux processes",
		Long: `gocr freezes a running tree of processes and writes it to a directory of images
(gocr dump), and brings it back later with the same PIDs, memory, files and signals
(gocr restore).`,
		Version:       core.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return g.setupLog()
		},
	}
	cmd.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "log detail to standard error")
	cmd.PersistentFlags().StringVarP(&g.logFile, "log-file", "o", "", "write a detailed log to this file")
	cmd.PersistentFlags().StringSliceVar(&g.plugins, "plugin", nil, "start plugin gocr-plugin-NAME for a dump (repeatable or comma-separated); a restore starts those the image needs")
	cmd.PersistentFlags().StringArrayVar(&g.actionScripts, "action-script", nil, "run this script at each stage of a dump or restore, with CRTOOLS_SCRIPT_ACTION set (as CRIU; repeatable)")
	cmd.PersistentFlags().DurationVar(&g.pluginTimeout, "plugin-timeout", 0, "bound each plugin call by this long (default 30s; saving many GiB of device memory takes longer)")
	cmd.PersistentFlags().StringSliceVar(&g.pluginDirs, "plugin-dir", nil, "look for plugins here too (also $GOCR_PLUGIN_DIR, and gocr's own directory)")
	cmd.AddCommand(newCmdDump(g, nil), newCmdPreDump(g, nil), newCmdShow(g, nil), newCmdRestore(g, nil), newCmdResume(g, nil), newCmdTrack(g, nil), newCmdApply(g, nil), newCmdCheck(g, nil), newCmdSwrk(g), newCmdService(g), newCmdPageServer(g))
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	return cmd
}

func (g *globalOptions) setupLog() error {
	var w io.Writer = io.Discard
	level := slog.LevelInfo
	if g.verbose {
		w = g.errOut
		level = slog.LevelDebug
	}
	if g.logFile != "" {
		f, err := os.OpenFile(g.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("open log file: %w", err)
		}
		w = f
		level = slog.LevelDebug
		if g.verbose {
			w = io.MultiWriter(f, g.errOut)
		}
	}
	g.log = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
	return nil
}

// Main runs the CLI and returns the exit code.
func Main() int {
	if len(os.Args) > 0 && os.Args[0] == core.StubName {
		// The restore stub is stopped by ptrace before it runs; if it ever runs, it stops here.
		return exitFailure
	}
	pidinit.RunIfInit()
	args := os.Args[1:]
	if filepath.Base(os.Args[0]) == "criu" {
		var done bool
		if args, done = criuArgs(args, os.Stdout); done {
			return exitOK
		}
	}
	return run(args, os.Stdout, os.Stderr)
}

func run(args []string, out, errOut io.Writer) int {
	g := &globalOptions{out: out, errOut: errOut, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	cmd := newRootCmd(g)
	cmd.SetArgs(args)
	cmd.SetOut(out)
	cmd.SetErr(errOut)
	// Ctrl-C and SIGTERM cancel the operation, which then rolls back.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var es exitStatusError
	if errors.As(err, &es) {
		return es.code
	}
	code := exitCode(err)
	if code == exitUsage && !errors.Is(err, core.ErrBadArgs) {
		fmt.Fprintf(errOut, "gocr: %v\nRun 'gocr --help' for usage.\n", err)
	} else {
		fmt.Fprintf(errOut, "gocr: %v\n", err)
	}
	g.log.Error("command failed", "err", err, "exit", code)
	return code
}
