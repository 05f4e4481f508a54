package core_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/internal/testutil"
)

// The image holds exactly the pattern written at the fixed address, the unread pipe bytes,
// the file offset, the blocked and pending signal and the handler.
func TestDumpImageHoldsState(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "state")
	cpus := statusField(p.Pid, "Cpus_allowed_list")
	img := dump(t, core.LeaveRunning, p.Pid)
	if !testutil.Alive(p.Pid) {
		t.Fatal("process did not survive --leave-running")
	}
	if got := statusField(p.Pid, "Cpus_allowed_list"); got != cpus {
		t.Errorf("CPU affinity after the dump %q, before %q", got, cpus)
	}

	c, err := image.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.VerifyData(); err != nil {
		t.Fatal(err)
	}
	proc := c.Procs[int32(p.Pid)]
	if proc == nil {
		t.Fatalf("no process %d in the image", p.Pid)
	}
	// Find the 64 pattern pages at 0x10000000 in the page file.
	const addr, pages = 0x10000000, 64
	var off uint64
	found := false
	for _, r := range proc.Pages {
		if r.Vaddr <= addr && addr+pages*4096 <= r.Vaddr+r.NrPages*4096 {
			off += addr - r.Vaddr
			found = true
			break
		}
		off += r.NrPages * 4096
	}
	if !found {
		t.Fatalf("pattern pages not in the image: runs %v", proc.Pages)
	}
	b, err := os.ReadFile(filepath.Join(img, proc.PagesFile))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < pages*4096; i++ {
		if want := byte((i*7 + 3) % 251); b[int(off)+i] != want {
			t.Fatalf("image byte %#x of the pattern is %#x, want %#x", i, b[int(off)+i], want)
		}
	}
	// The mapping that was only read holds the zero page: nothing of it is dumped.
	for _, r := range proc.Pages {
		if r.Vaddr < 0x20000000+16*4096 && r.Vaddr+r.NrPages*4096 > 0x20000000 {
			t.Errorf("zero-page mapping dumped: run %#x+%d", r.Vaddr, r.NrPages)
		}
	}
	var pipeData string
	for _, pp := range c.Tree.Pipes {
		if d, _ := os.ReadFile(filepath.Join(img, pp.DataFile)); string(d) == "hello pipe bytes" {
			pipeData = string(d)
		}
	}
	var fifoData string
	for _, f := range c.Tree.Files {
		if f.Kind == imagepb.FileKind_FILE_KIND_FIFO {
			for _, pp := range c.Tree.Pipes {
				if pp.Id == f.PipeId && pp.DataLen > 0 {
					d, _ := os.ReadFile(filepath.Join(img, pp.DataFile))
					fifoData = string(d)
				}
			}
		}
		if f.Deleted {
			d, _ := os.ReadFile(filepath.Join(img, f.DataFile))
			if string(d) != "gone but kept" {
				t.Errorf("deleted file content in the image: %q", d)
			}
		}
	}
	if fifoData != "fifo bytes" {
		t.Errorf("FIFO bytes in the image: %q", fifoData)
	}
	if pipeData != "hello pipe bytes" {
		t.Errorf("pipe bytes in the image: %q", pipeData)
	}
	var offset int64 = -1
	for _, f := range c.Tree.Files {
		if f.Path == filepath.Join(dir, "data") {
			offset = f.Pos
		}
	}
	if offset != 12345 {
		t.Errorf("file offset in the image: %d, want 12345", offset)
	}
	if proc.Sigmask&(1<<(syscall.SIGUSR2-1)) == 0 {
		t.Errorf("SIGUSR2 not blocked in the image: mask %#x", proc.Sigmask)
	}
	pending := false
	for _, s := range proc.Pending {
		pending = pending || s.Signo == int32(syscall.SIGUSR2)
	}
	if !pending {
		t.Errorf("SIGUSR2 not pending in the image: %v", proc.Pending)
	}
	handled := false
	for _, a := range proc.Sigactions {
		handled = handled || (a.Signo == int32(syscall.SIGUSR1) && a.Handler > 1)
	}
	if !handled {
		t.Errorf("no SIGUSR1 handler in the image")
	}
	// The process was left running unharmed: it still reports, the pipe bytes unread.
	syscall.Kill(p.Pid, syscall.SIGUSR1)
	report := filepath.Join(dir, "report")
	testutil.WaitFor(t, "a report", func() bool { return len(testutil.Lines(report)) > 0 })
	if got, want := testutil.Lines(report)[0], "usr1=1 pending_usr2=1 pipe=hello pipe bytes offset=12345 pattern=ok fifo=fifo bytes deleted=gone but kept shared=shared before zero=ok"; got != want {
		t.Fatalf("after the dump:\n got %s\nwant %s", got, want)
	}
	// Files are private: 0700 directory, 0600 files.
	if st, _ := os.Stat(img); st.Mode().Perm() != 0o700 {
		t.Errorf("image directory mode %o", st.Mode().Perm())
	}
	ents, _ := os.ReadDir(img)
	for _, e := range ents {
		if st, _ := os.Stat(filepath.Join(img, e.Name())); st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %o", e.Name(), st.Mode().Perm())
		}
	}
}

// Every process of the tree is dumped and a dump with --leave-stopped leaves them stopped.
func TestDumpLeaveStopped(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.Build(t, "counter")
	log := filepath.Join(t.TempDir(), "count.log")
	p := testutil.Start(t, bin, log)
	testutil.WaitFor(t, "counter to count", func() bool { return lastInt(t, log) >= 3 })
	dump(t, core.LeaveStopped, p.Pid)
	testutil.WaitFor(t, "process to be stopped", func() bool { s, _ := testutil.ProcState(p.Pid); return s == "T" })
	if _, tracer := testutil.ProcState(p.Pid); tracer != 0 {
		t.Fatalf("still traced by %d", tracer)
	}
	at := lastInt(t, log)
	if n, err := core.Resume(p.Pid); err != nil || n != 1 {
		t.Fatalf("resume: %d %v", n, err)
	}
	testutil.WaitFor(t, "counter to go on", func() bool { return lastInt(t, log) >= at+5 })
	checkSequence(t, log, at+5)
}

// running checks that a process goes on as before: not stopped, not traced, still counting.
func running(t *testing.T, pid int, log string) {
	t.Helper()
	state, tracer := testutil.ProcState(pid)
	if state == "T" || state == "t" || state == "Z" || state == "" || tracer != 0 {
		t.Fatalf("pid %d is in state %q, traced by %d; want it running as before", pid, state, tracer)
	}
	at := lastInt(t, log)
	testutil.WaitFor(t, "the process to go on counting", func() bool { return lastInt(t, log) >= at+3 })
	checkSequence(t, log, at+3)
}

func TestDumpBadInput(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.Build(t, "counter")
	log := filepath.Join(t.TempDir(), "count.log")
	p := testutil.Start(t, bin, log)
	testutil.WaitFor(t, "counter to count", func() bool { return lastInt(t, log) >= 3 })
	ctx := context.Background()

	t.Run("no such pid", func(t *testing.T) {
		_, err := core.Dump(ctx, core.DumpOptions{Roots: []int{4194000}, Dir: filepath.Join(t.TempDir(), "img")})
		if !errors.Is(err, core.ErrNoProcess) {
			t.Fatalf("got %v, want ErrNoProcess", err)
		}
	})
	t.Run("directory holds an image", func(t *testing.T) {
		dir := dump(t, core.LeaveRunning, p.Pid)
		_, err := core.Dump(ctx, core.DumpOptions{Roots: []int{p.Pid}, Dir: dir})
		if !errors.Is(err, image.ErrExists) {
			t.Fatalf("got %v, want ErrExists", err)
		}
		running(t, p.Pid, log)
		if _, err := core.Dump(ctx, core.DumpOptions{Roots: []int{p.Pid}, Dir: dir, Overwrite: true, Final: core.LeaveRunning}); err != nil {
			t.Fatalf("overwrite: %v", err)
		}
		running(t, p.Pid, log)
	})
	t.Run("directory cannot be written", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "file")
		os.WriteFile(f, nil, 0o600)
		_, err := core.Dump(ctx, core.DumpOptions{Roots: []int{p.Pid}, Dir: filepath.Join(f, "img")})
		if err == nil {
			t.Fatal("dump into a path under a regular file succeeded")
		}
		running(t, p.Pid, log)
	})
	t.Run("unsupported fd", func(t *testing.T) {
		// A process holding a packet socket: the dump names it and the process goes on.
		sock := testutil.Build(t, "oddfd")
		slog := filepath.Join(t.TempDir(), "sock.log")
		s := testutil.Start(t, sock, slog)
		testutil.WaitFor(t, "oddfd to count", func() bool { return lastInt(t, slog) >= 3 })
		dir := filepath.Join(t.TempDir(), "img")
		_, err := core.Dump(ctx, core.DumpOptions{Roots: []int{s.Pid}, Dir: dir})
		var ue *core.UnsupportedError
		if !errors.As(err, &ue) || ue.Pid != s.Pid || ue.What != "fd 4" || !strings.Contains(ue.Kind, "socket") {
			t.Fatalf("got %v, want an UnsupportedError for pid %d fd 4", err, s.Pid)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a failed dump left %s behind", dir)
		}
		running(t, s.Pid, slog)
	})
	t.Run("other namespaces", func(t *testing.T) {
		// unshare execs the counter in new UTS and cgroup namespaces, under the same pid:
		// the UTS namespace gocr makes again, the cgroup namespace not yet.
		unshare, err := exec.LookPath("unshare")
		if err != nil {
			t.Skip("unshare (util-linux) is not installed")
		}
		nlog := filepath.Join(t.TempDir(), "ns.log")
		n := testutil.Start(t, unshare, "--uts", "--cgroup", bin, nlog)
		testutil.WaitFor(t, "the counter in its namespaces to count", func() bool { return lastInt(t, nlog) >= 3 })
		_, err = core.Dump(ctx, core.DumpOptions{Roots: []int{n.Pid}, Dir: filepath.Join(t.TempDir(), "img")})
		var ue *core.UnsupportedError
		if !errors.As(err, &ue) || ue.Pid != n.Pid || !strings.HasPrefix(ue.Kind, "cgroup namespaces of its own") {
			t.Fatalf("got %v, want an UnsupportedError naming the cgroup namespace of pid %d", err, n.Pid)
		}
		running(t, n.Pid, nlog)
	})
	t.Run("deleted file over the ghost limit", func(t *testing.T) {
		big := filepath.Join(t.TempDir(), "rotated.log")
		os.WriteFile(big, make([]byte, 2<<20), 0o600)
		h, _ := testutil.StartReady(t, "holdfile", big)
		_, err := core.Dump(ctx, core.DumpOptions{Roots: []int{h.Pid}, Dir: filepath.Join(t.TempDir(), "img"), GhostLimit: 1 << 20})
		var ue *core.UnsupportedError
		if !errors.As(err, &ue) || !strings.Contains(ue.Kind, "deleted file "+big) || !strings.Contains(ue.Hint, "--ghost-limit") {
			t.Fatalf("got %v, want a refusal naming the deleted file and --ghost-limit", err)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", h.Pid)); err != nil {
			t.Fatal("the process is gone after a refused dump")
		}
		if _, err := core.Dump(ctx, core.DumpOptions{Roots: []int{h.Pid}, Dir: filepath.Join(t.TempDir(), "img"), Final: core.LeaveRunning}); err != nil {
			t.Fatalf("dump under the default ghost limit: %v", err)
		}
	})
	t.Run("fd in flight", func(t *testing.T) {
		flog := filepath.Join(t.TempDir(), "f.log")
		f := testutil.Start(t, testutil.Build(t, "inflight"), flog)
		testutil.WaitFor(t, "inflight to count", func() bool { return lastInt(t, flog) >= 3 })
		_, err := core.Dump(ctx, core.DumpOptions{Roots: []int{f.Pid}, Dir: filepath.Join(t.TempDir(), "img")})
		var ue *core.UnsupportedError
		if !errors.As(err, &ue) || !strings.Contains(ue.Kind, "file descriptors in flight") {
			t.Fatalf("got %v, want an UnsupportedError for the fd in flight", err)
		}
		running(t, f.Pid, flog)
	})
	t.Run("socket connected outside", func(t *testing.T) {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		mine, theirs := os.NewFile(uintptr(fds[0]), "mine"), os.NewFile(uintptr(fds[1]), "theirs")
		defer mine.Close()
		slog := filepath.Join(t.TempDir(), "c.log")
		cmd := exec.Command(bin, slog)
		cmd.ExtraFiles = []*os.File{theirs} // fd 3 in the child
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		theirs.Close()
		c := &testutil.Proc{Pid: cmd.Process.Pid, Cmd: cmd}
		defer c.Kill()
		testutil.WaitFor(t, "counter to count", func() bool { return lastInt(t, slog) >= 3 })
		_, err = core.Dump(ctx, core.DumpOptions{Roots: []int{c.Pid}, Dir: filepath.Join(t.TempDir(), "img")})
		var ue *core.UnsupportedError
		if !errors.As(err, &ue) || ue.What != "fd 3" || !strings.Contains(err.Error(), "outside the dumped trees") {
			t.Fatalf("got %v, want an UnsupportedError naming fd 3 and its outside peer", err)
		}
		running(t, c.Pid, slog)
	})
	t.Run("already traced", func(t *testing.T) {
		tlog := filepath.Join(t.TempDir(), "traced.log")
		pid, stop := startTraced(t, bin, tlog)
		defer stop()
		testutil.WaitFor(t, "traced counter to count", func() bool { return lastInt(t, tlog) >= 3 })
		_, err := core.Dump(ctx, core.DumpOptions{Roots: []int{pid}, Dir: filepath.Join(t.TempDir(), "img")})
		if !errors.Is(err, core.ErrTraced) {
			t.Fatalf("got %v, want ErrTraced", err)
		}
	})
	t.Run("interrupted", func(t *testing.T) {
		b, bdir := testutil.StartReady(t, "bigmem", "64")
		cctx, cancel := context.WithCancel(ctx)
		dir := filepath.Join(t.TempDir(), "img")
		// Cancel as soon as memory starts to be written, as Ctrl-C would.
		_, err := core.Dump(cctx, core.DumpOptions{Roots: []int{b.Pid}, Dir: dir, Progress: func(core.Progress) { cancel() }})
		if !errors.Is(err, core.ErrInterrupted) {
			t.Fatalf("got %v, want ErrInterrupted", err)
		}
		if ents, _ := os.ReadDir(filepath.Dir(dir)); len(ents) != 0 {
			t.Fatalf("an interrupted dump left %v", ents)
		}
		if s, tr := testutil.ProcState(b.Pid); s == "T" || s == "t" || tr != 0 {
			t.Fatalf("after an interrupted dump the process is %q, traced by %d", s, tr)
		}
		syscall.Kill(b.Pid, syscall.SIGUSR1)
		testutil.WaitFor(t, "memory check", func() bool { return len(testutil.Lines(filepath.Join(bdir, "report"))) > 0 })
		if got := testutil.Lines(filepath.Join(bdir, "report"))[0]; got != "ok 1" {
			t.Fatalf("memory after an interrupted dump: %s", got)
		}
	})
	t.Run("pid inside another tree", func(t *testing.T) {
		tree := testutil.Build(t, "tree")
		tdir := t.TempDir()
		tp := testutil.Start(t, tree, tdir)
		testutil.WaitFor(t, "tree", func() bool { return len(testutil.Children(tp.Pid)) == 2 })
		defer func() {
			for _, c := range testutil.Children(tp.Pid) {
				for _, g := range testutil.Children(c) {
					testutil.KillAndReap(g)
				}
				testutil.KillAndReap(c)
			}
		}()
		kid := testutil.Children(tp.Pid)[0]
		_, err := core.Dump(ctx, core.DumpOptions{Roots: []int{tp.Pid, kid}, Dir: filepath.Join(t.TempDir(), "img")})
		if !errors.Is(err, core.ErrBadArgs) {
			t.Fatalf("got %v, want ErrBadArgs", err)
		}
		running(t, tp.Pid, filepath.Join(tdir, "root.log"))
	})
	running(t, p.Pid, log)
}

// startTraced starts bin traced by a locked thread of the test, as a debugger would hold it.
func startTraced(t *testing.T, bin string, args ...string) (int, func()) {
	t.Helper()
	pidc := make(chan int)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		cmd := exec.Command(bin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true}
		if err := cmd.Start(); err != nil {
			close(pidc)
			return
		}
		pid := cmd.Process.Pid
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, 0, nil) // the exec stop
		syscall.PtraceCont(pid, 0)
		pidc <- pid
		<-done
		syscall.Kill(pid, syscall.SIGKILL)
		for {
			if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil || ws.Exited() || ws.Signaled() {
				break
			}
		}
		cmd.Process.Release()
	}()
	pid, ok := <-pidc
	if !ok {
		t.Fatal("start traced process")
	}
	return pid, func() { close(done) }
}

// A stopped process (SIGSTOP) can be dumped: it stays stopped, comes back stopped, and goes on
// when resumed.
func TestDumpStoppedProcess(t *testing.T) {
	testutil.RequireRoot(t)
	log := filepath.Join(t.TempDir(), "count.log")
	p := testutil.Start(t, testutil.Build(t, "counter"), log)
	testutil.WaitFor(t, "counter to count", func() bool { return lastInt(t, log) >= 3 })
	syscall.Kill(p.Pid, syscall.SIGSTOP)
	testutil.WaitFor(t, "the process to stop", func() bool { s, _ := testutil.ProcState(p.Pid); return s == "T" })
	at := lastInt(t, log)

	dump(t, core.LeaveRunning, p.Pid)
	// Let go with SIGSTOP pending, it stops before it runs a user instruction.
	testutil.WaitFor(t, "the process to be stopped again", func() bool { s, tr := testutil.ProcState(p.Pid); return s == "T" && tr == 0 })
	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	if got := lastInt(t, log); got != at {
		t.Fatalf("the stopped process counted from %d to %d during the dumps", at, got)
	}
	restore(t, img)
	testutil.WaitFor(t, "the restored process to be stopped", func() bool { s, _ := testutil.ProcState(p.Pid); return s == "T" })
	if _, err := core.Resume(p.Pid); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "it to go on", func() bool { return lastInt(t, log) >= at+10 })
	checkSequence(t, log, at+10)
}

// A job stopped by SIGTSTP (Ctrl-Z) is stopped again by SIGTSTP, not SIGSTOP, after a dump
// that leaves it and after a restore: its parent, waiting as a shell does, sees SIGTSTP.
func TestStoppedBySIGTSTP(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "tstp")
	kids := testutil.Children(p.Pid)
	if len(kids) != 1 {
		t.Fatalf("children %v", kids)
	}
	askTwice(t, p, filepath.Join(dir, "report"), 0)
	if st, _ := testutil.ProcState(kids[0]); st != "T" {
		t.Fatalf("the restored job is %q, want stopped", st)
	}
}
