package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/gocr/gocr/core"
)

type restoreOptions struct {
	*globalOptions
	dir          string
	detach       bool
	lazyPages    bool
	pageServer   string
	tokenFile    string
	leaveStopped bool
	checkOnly    bool
	shellJob     bool
	pidfile      string
	cgroups      string
	inheritFds   []string
	newPidns     bool
	json         bool
	execCmd      bool
	command      []string // with execCmd: what gocr execs once the tree runs
}

func newCmdRestore(g *globalOptions, runF func(*restoreOptions) error) *cobra.Command {
	opts := &restoreOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "restore -D DIR",
		Short: "Bring a dumped tree of processes back",
		Long: `Recreate the processes of the image in DIR with their PIDs, memory, open files and
signals, and let them run. As CRIU does, gocr then waits for the root process and exits
with its status; with --restore-detached it returns as soon as the tree runs. The image
is checked before anything is created; if the restore fails, every process it made is
killed and nothing is left behind.`,
		Example: `  gocr restore -D /var/lib/ckpt/job1
  gocr restore -d -D /tmp/img
  gocr restore --leave-stopped -d -D /tmp/img && gocr resume -t 4121
  gocr restore -D /tmp/img --exec-cmd -- /usr/bin/waiter   # waiter is the root's parent`,
		Args: func(cmd *cobra.Command, args []string) error {
			if opts.execCmd {
				if len(args) == 0 {
					return usageError{fmt.Errorf("restore: --exec-cmd: give the command after --")}
				}
				opts.command = args
				return nil
			}
			return noArgs(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.dir == "" && opts.pageServer == "" {
				return usageError{fmt.Errorf("restore: from where? give the images directory with -D DIR")}
			}
			if opts.lazyPages && opts.execCmd {
				return usageError{fmt.Errorf("restore: --lazy-pages needs gocr to stay and serve the memory: not with --exec-cmd")}
			}
			switch opts.cgroups {
			case "soft", "none", "ignore":
			default:
				return usageError{fmt.Errorf("restore: --manage-cgroups %q: gocr knows soft and none (ignore)", opts.cgroups)}
			}
			if runF != nil {
				return runF(opts)
			}
			return restoreRun(cmd, opts)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.dir, "images-dir", "D", "", "directory of the image")
	f.BoolVarP(&opts.detach, "restore-detached", "d", false, "return once the tree runs, do not wait for it")
	f.BoolVarP(&opts.leaveStopped, "leave-stopped", "s", false, "leave the restored tree stopped (see gocr resume)")
	f.BoolVar(&opts.lazyPages, "lazy-pages", false, "start the tree before its memory is in: gocr serves each page on first touch and copies the rest in the background (with -d, gocr returns once every page is in)")
	f.StringVar(&opts.pageServer, "page-server", "", "with --lazy-pages: take the image from a gocr page-server at HOST:PORT serving it (-D then receives its metadata)")
	f.StringVar(&opts.tokenFile, "auth-token-file", "", "with --page-server: the secret the page server holds")
	f.BoolVar(&opts.checkOnly, "check-only", false, "only check whether a restore here would work; create nothing")
	f.BoolVarP(&opts.shellJob, "shell-job", "j", false, "restore a shell job onto the terminal gocr runs on (as CRIU)")
	// CRIU needs -l to take file locks; gocr always takes them, and accepts the flag so that
	// CRIU command lines work unchanged.
	f.BoolP("file-locks", "l", false, "accepted for CRIU command lines: gocr always handles file locks")
	f.StringVar(&opts.cgroups, "manage-cgroups", "soft", "soft: put each process back into its cgroups, making missing ones; none (or ignore): leave them in gocr's (as CRIU)")
	f.StringArrayVar(&opts.inheritFds, "inherit-fd", nil, "fd[N]:KEY: gocr's fd N takes the place of file KEY of the dump (pipe:[INODE], as the dump's warning names it), as CRIU; repeatable")
	f.BoolVar(&opts.newPidns, "new-pidns", false, "restore into a pid namespace of its own, where the tree's pids are free whatever runs here; a gocr init is its pid 1 (a tree dumped with its own pid namespace always gets a new one)")
	f.StringVar(&opts.pidfile, "pidfile", "", "write the restored root's PID to this file (one line per root), as CRIU")
	f.BoolVar(&opts.json, "json", false, "print the result as JSON")
	f.BoolVar(&opts.execCmd, "exec-cmd", false, "once the tree runs, exec the command given after -- in gocr's place, as CRIU does: it is the root's parent (implies -d)")
	return cmd
}

// exitStatusError carries the restored root's exit status to the exit code.
type exitStatusError struct{ code int }

func (e exitStatusError) Error() string {
	return fmt.Sprintf("restored process exited with status %d", e.code)
}

func restoreRun(cmd *cobra.Command, opts *restoreOptions) error {
	checkOnly := opts.checkOnly
	if !checkOnly && opts.pageServer == "" {
		var err error
		if checkOnly, err = core.IsCheckOnly(opts.dir); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	if checkOnly {
		return checkRun(opts.globalOptions, opts.dir, opts.json)
	}
	var token []byte
	if opts.pageServer != "" {
		var err error
		if token, err = readToken(opts.tokenFile); err != nil {
			return err
		}
	}
	prog := newProgress(opts.errOut, "restore", opts.json)
	ro := core.RestoreOptions{Dir: opts.dir, LeaveStopped: opts.leaveStopped, Progress: prog.update, ShellJob: opts.shellJob,
		PluginDirs: opts.pluginDirs, PluginTimeout: opts.pluginTimeout, NoCgroups: opts.cgroups != "soft", ActionScripts: opts.actionScripts, ScriptOutput: opts.errOut, NewPidns: opts.newPidns, LazyPages: opts.lazyPages, PageServer: opts.pageServer, PageServerToken: token}
	for _, spec := range opts.inheritFds {
		var fd int
		var key string
		if n, err := fmt.Sscanf(spec, "fd[%d]:%s", &fd, &key); n != 2 || err != nil || fd < 0 || !strings.HasPrefix(key, "pipe:[") {
			return usageError{fmt.Errorf("restore: --inherit-fd %q: want fd[N]:pipe:[INODE]", spec)}
		}
		if ro.InheritFds == nil {
			ro.InheritFds = map[string]int{}
		}
		ro.InheritFds[key] = fd
	}
	if opts.shellJob {
		for _, fd := range []int{0, 1, 2} {
			if ro.TTY = core.TerminalOf(fd); ro.TTY != "" {
				break
			}
		}
		// Without one, a tree that ran on no terminal restores all the same (as CRIU's);
		// the restore refuses a shell job that needs one.
	}
	// The pid file is made before the restore, so that a path that cannot be written fails
	// with nothing restored.
	var pidfile *os.File
	if opts.pidfile != "" {
		var err error
		if pidfile, err = os.OpenFile(opts.pidfile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644); err != nil {
			return fmt.Errorf("restore: pid file: %w", err)
		}
		defer pidfile.Close()
	}
	res, err := core.Restore(cmd.Context(), ro)
	prog.done()
	if err != nil {
		if pidfile != nil {
			os.Remove(opts.pidfile)
		}
		return err
	}
	if pidfile != nil {
		var b strings.Builder
		for _, r := range res.Roots {
			fmt.Fprintf(&b, "%d\n", r)
		}
		if _, err := pidfile.WriteString(b.String()); err != nil {
			return fmt.Errorf("restore: the tree runs (root %v), but writing the pid file failed: %w", res.Roots, err)
		}
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(opts.errOut, "gocr: warning: %s\n", w)
	}
	s := res.Stats
	opts.log.Debug("restore done", "processes", s.Processes, "bytes", s.Bytes, "verify", s.Verify,
		"create", s.Create, "memory", s.Memory, "total", s.Total, "syscalls", s.Syscalls)
	if opts.json {
		if err := json.NewEncoder(opts.out).Encode(map[string]any{
			"roots": res.Roots, "pids": res.Pids, "bytes": s.Bytes, "seconds": s.Total.Seconds(),
		}); err != nil {
			return err
		}
	} else if opts.detach || opts.leaveStopped {
		state := "running"
		if opts.leaveStopped {
			state = "stopped"
		}
		fmt.Fprintf(opts.out, "restored %d process(es) (root %v), %s of memory, in %s; %s\n",
			s.Processes, res.Roots, humanBytes(s.Bytes), s.Total.Round(1e5), state)
	}
	if opts.lazyPages && (opts.detach || opts.leaveStopped) {
		// gocr serves the memory: it stays until every page is in.
		if err := res.WaitPages(); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		copied, _, took := res.LazyStats()
		if !opts.json {
			fmt.Fprintf(opts.out, "every page is in: %s served lazily in %s\n", humanBytes(copied), took.Round(1e5))
		}
	}
	if opts.execCmd {
		// The exec'd program takes gocr's process, and with it the restored roots.
		bin, err := exec.LookPath(opts.command[0])
		if err == nil {
			// Not a child subreaper any more (the restore made gocr one), as the program was not.
			syscall.RawSyscall(syscall.SYS_PRCTL, 36 /* PR_SET_CHILD_SUBREAPER */, 0, 0)
			err = syscall.Exec(bin, opts.command, os.Environ())
		}
		return fmt.Errorf("restore: the tree runs (root %v), but --exec-cmd %s failed: %w", res.Roots, opts.command[0], err)
	}
	if opts.detach || opts.leaveStopped {
		return nil
	}
	ws, err := res.Wait()
	if perr := res.WaitPages(); perr != nil && err == nil {
		return fmt.Errorf("restore: %w", perr)
	}
	if err != nil {
		return fmt.Errorf("restore: wait for pid %d: %w", res.Roots[0], err)
	}
	switch {
	case ws.Exited() && ws.ExitStatus() == 0:
		return nil
	case ws.Exited():
		return exitStatusError{ws.ExitStatus()}
	case ws.Signaled():
		return exitStatusError{128 + int(ws.Signal())}
	}
	return nil
}

// checkRun runs check mode on an image and prints what it found.
func checkRun(g *globalOptions, dir string, asJSON bool) error {
	rep, err := core.Check(dir)
	if rep == nil {
		return err
	}
	if rep.Problems == nil {
		rep.Problems = []core.Problem{}
	}
	if asJSON {
		if jerr := json.NewEncoder(g.out).Encode(map[string]any{"ok": err == nil, "report": rep}); jerr != nil {
			return jerr
		}
		return err
	}
	fmt.Fprintf(g.out, "check of %s (%s image, %d process(es), %s of memory to restore, %s available)\n",
		rep.Dir, rep.Kind, rep.Processes, humanBytes(rep.Memory), humanBytes(rep.Available))
	if err == nil {
		fmt.Fprintln(g.out, "a restore here would work")
		return nil
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(g.out, "  - %s\n", p)
	}
	fmt.Fprintf(g.out, "a restore here would fail: %d problem(s)\n", len(rep.Problems))
	return fmt.Errorf("check of %s: %w", dir, core.ErrCheckFailed)
}
