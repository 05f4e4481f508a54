package core_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/internal/testutil"
)

// %ymm15, upper half included, keeps its value across a dump and restore.
func TestRestoreXState(t *testing.T) {
	testutil.RequireRoot(t)
	log := filepath.Join(t.TempDir(), "xstate.log")
	p := testutil.Start(t, testutil.Build(t, "xstate"), log)
	testutil.WaitFor(t, "xstate to count", func() bool { return len(testutil.Lines(log)) >= 2 })
	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	n := len(testutil.Lines(log))
	restore(t, img)
	testutil.WaitFor(t, "xstate to go on", func() bool { return len(testutil.Lines(log)) >= n+3 })
	for i, l := range testutil.Lines(log) {
		if want := fmt.Sprintf("%d ok", (i+1)*200); l != want {
			t.Fatalf("line %d: %q, want %q: the vector registers were not restored", i+1, l, want)
		}
	}
}

func statusField(pid int, key string) string {
	for _, l := range strings.Split(testutil.ReadFile(fmt.Sprintf("/proc/%d/status", pid)), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == key {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return ""
}

// A process of another user comes back with its ids, groups, umask, rlimits and cwd.
func TestRestoreIdentity(t *testing.T) {
	testutil.RequireRoot(t)
	// t.TempDir's parents are private: nobody needs a directory it can reach.
	dir, err := os.MkdirTemp("", "gocr-identity-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	bin := testutil.Build(t, "counter")
	// The workload must be readable by nobody.
	own := filepath.Join(dir, "counter")
	b, _ := os.ReadFile(bin)
	os.WriteFile(own, b, 0o755)
	log := filepath.Join(dir, "count.log")
	// The child starts with umask 027 and a core size soft limit of 1 MiB, both unlike ours.
	// (Raising a soft limit up to the hard one needs no privilege; prlimit on another
	// user's process needs CAP_SYS_RESOURCE, which root lacks here.)
	var core0 syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_CORE, &core0)
	if core0.Max < 1<<20 {
		t.Fatalf("this test needs a core size hard limit of at least 1 MiB (ulimit -Hc), got %d", core0.Max)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{Cur: 1 << 20, Max: core0.Max}); err != nil {
		t.Fatal(err)
	}
	old := syscall.Umask(0o027)
	cmd := exec.Command(own, log)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{65534, 100}}}
	err = cmd.Start()
	syscall.Umask(old)
	syscall.Setrlimit(syscall.RLIMIT_CORE, &core0)
	if err != nil {
		t.Fatal(err)
	}
	p := &testutil.Proc{Pid: cmd.Process.Pid, Cmd: cmd}
	t.Cleanup(p.Kill)
	testutil.WaitFor(t, "counter to count", func() bool { return lastInt(t, log) >= 3 })
	keys := []string{"Uid", "Gid", "Groups", "Umask"}
	before := map[string]string{}
	for _, k := range keys {
		before[k] = statusField(p.Pid, k)
	}
	limits := testutil.ReadFile(fmt.Sprintf("/proc/%d/limits", p.Pid))

	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	at := lastInt(t, log)
	restore(t, img)
	testutil.WaitFor(t, "counter to go on", func() bool { return lastInt(t, log) >= at+10 })
	checkSequence(t, log, at+10)
	for _, k := range keys {
		if got := statusField(p.Pid, k); got != before[k] {
			t.Errorf("%s after restore %q, before %q", k, got, before[k])
		}
	}
	if got := testutil.ReadFile(fmt.Sprintf("/proc/%d/limits", p.Pid)); got != limits {
		t.Errorf("limits after restore:\n%s\nbefore:\n%s", got, limits)
	}
	if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", p.Pid)); cwd != dir {
		t.Errorf("cwd after restore %q, want %q", cwd, dir)
	}
}

// openPty opens a pty pair in the test: the terminal the workload runs on.
func openPty(t *testing.T) (master *os.File, slave string) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no /dev/ptmx: %v", err)
	}
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatal(e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatal(e)
	}
	t.Cleanup(func() { m.Close() })
	return m, fmt.Sprintf("/dev/pts/%d", n)
}

// A process whose output goes to a terminal it does not own gets the same terminal back.
func TestRestoreTerminal(t *testing.T) {
	testutil.RequireRoot(t)
	_, slave := openPty(t)
	tty, err := os.OpenFile(slave, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(t.TempDir(), "count.log")
	cmd := exec.Command(testutil.Build(t, "counter"), log)
	cmd.Stdout, cmd.Stderr = tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	p := &testutil.Proc{Pid: cmd.Process.Pid, Cmd: cmd}
	t.Cleanup(p.Kill)
	testutil.WaitFor(t, "counter to count", func() bool { return lastInt(t, log) >= 3 })
	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	restore(t, img)
	for _, fd := range []int{1, 2} {
		if got, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", p.Pid, fd)); got != slave {
			t.Errorf("fd %d after restore is %q, want %q", fd, got, slave)
		}
	}
}

// A shell's job (its session leader, outside the tree, holds its terminal) is refused without
// ShellJob; with it, it is dumped and restored onto another terminal, and goes on.
func TestShellJob(t *testing.T) {
	testutil.RequireRoot(t)
	master, slave := openPty(t)
	_ = master
	tty, err := os.OpenFile(slave, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	log, pidFile := filepath.Join(dir, "count.log"), filepath.Join(dir, "pid")
	// A shell: session leader on the terminal, with the counter as its job.
	sh := exec.Command("/bin/sh", "-c", testutil.Build(t, "counter")+" "+log+" & echo $! > "+pidFile+"; wait")
	sh.Stdin, sh.Stdout, sh.Stderr = tty, tty, tty
	sh.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	shell := &testutil.Proc{Pid: sh.Process.Pid, Cmd: sh}
	t.Cleanup(shell.Kill)
	var job int
	testutil.WaitFor(t, "the job to count", func() bool {
		fmt.Sscan(testutil.ReadFile(pidFile), &job)
		return job > 0 && lastInt(t, log) >= 3
	})
	t.Cleanup(func() { testutil.KillAndReap(job) })

	_, err = core.Dump(t.Context(), core.DumpOptions{Roots: []int{job}, Dir: filepath.Join(t.TempDir(), "img")})
	if !errors.Is(err, core.ErrUnsupported) || !strings.Contains(err.Error(), "shell job") {
		t.Fatalf("got %v, want a refusal naming a shell job", err)
	}
	img := filepath.Join(t.TempDir(), "img")
	if _, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{job}, Dir: img, ShellJob: true}); err != nil {
		t.Fatal(err)
	}
	// Gone, not only dead: a zombie still holds its PID, and the restore needs it.
	testutil.WaitFor(t, "the shell to reap its job", func() bool { s, _ := testutil.ProcState(job); return s == "" })
	at := lastInt(t, log)
	if _, err := core.Restore(t.Context(), core.RestoreOptions{Dir: img}); !errors.Is(err, core.ErrBadArgs) {
		t.Fatalf("restore of a shell job without ShellJob: %v, want ErrBadArgs", err)
	}
	_, newTTY := openPty(t)
	res, err := core.Restore(t.Context(), core.RestoreOptions{Dir: img, ShellJob: true, TTY: newTTY})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Adopt(t, res.Pids[0])
	testutil.WaitFor(t, "the job to go on", func() bool { return lastInt(t, log) >= at+10 })
	checkSequence(t, log, at+10)
	for _, fd := range []int{1, 2} { // fd 0 is /dev/null: sh gives it to background jobs
		if got, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", job, fd)); got != newTTY {
			t.Errorf("fd %d after restore is %q, want the new terminal %q", fd, got, newTTY)
		}
	}
}

// A pty pair owned by the tree (a terminal emulator and the session on its terminal) comes
// back: same /dev/pts index, owner and mode of its /dev/pts entry (a terminal emulator running
// as root gives it to the user), the session's controlling terminal and foreground group, the
// terminal's settings (echo off); the conversation goes on.
func TestRestorePtyPair(t *testing.T) {
	testutil.RequireRoot(t)
	log := filepath.Join(t.TempDir(), "pty.log")
	p := testutil.Start(t, testutil.Build(t, "ptypair"), log)
	testutil.WaitFor(t, "the pty to talk", func() bool { return lastInt(t, log) >= 10 })
	pids := append([]int{p.Pid}, testutil.Children(p.Pid)...)
	pts, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/0", pids[1]))
	if err != nil || !strings.HasPrefix(pts, "/dev/pts/") {
		t.Fatalf("the session's terminal: %q, %v", pts, err)
	}
	if err := os.Chown(pts, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(pts, 0o600); err != nil {
		t.Fatal(err)
	}
	img := dumpTree(t, p)
	at := lastInt(t, log)
	restore(t, img)
	testutil.WaitForProcs(t, "the pty to go on", func() bool { return lastInt(t, log) >= at+10 }, pids...)
	var st syscall.Stat_t
	if err := syscall.Stat(pts, &st); err != nil || st.Uid != 1234 || st.Gid != 5678 || st.Mode&0o7777 != 0o600 {
		t.Errorf("%s after the restore: owner %d:%d mode %#o (%v), want 1234:5678 0600", pts, st.Uid, st.Gid, st.Mode&0o7777, err)
	}
	for i, l := range testutil.Lines(log) {
		if want := fmt.Sprintf("%d echo=0 fg=1", i+1); l != want {
			t.Fatalf("line %d: %q, want %q", i+1, l, want)
		}
	}
}

// A process under a seccomp filter that blocks a syscall gocr runs inside processes is dumped
// all the same (the filter is suspended for gocr), and comes back under the same filter.
func TestRestoreSeccomp(t *testing.T) {
	testutil.RequireRoot(t)
	log := filepath.Join(t.TempDir(), "count.log")
	p := testutil.Start(t, testutil.Build(t, "seccomp"), log)
	testutil.WaitFor(t, "counter to count", func() bool { return lastInt(t, log) >= 3 })
	dump(t, core.LeaveRunning, p.Pid) // the filter is suspended for gocr only while it works
	running(t, p.Pid, log)
	if got := statusField(p.Pid, "Seccomp"); got != "2" {
		t.Fatalf("Seccomp mode after a dump %q, want 2", got)
	}
	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	at := lastInt(t, log)
	restore(t, img)
	testutil.WaitFor(t, "counter to go on", func() bool { return lastInt(t, log) >= at+5 })
	checkSequence(t, log, at+5)
	if got := statusField(p.Pid, "Seccomp"); got != "2" {
		t.Errorf("Seccomp mode after restore %q, want 2", got)
	}
	syscall.Kill(p.Pid, syscall.SIGUSR1)
	testutil.WaitFor(t, "a report", func() bool { return len(testutil.Lines(log+".report")) > 0 })
	if got := testutil.Lines(log + ".report")[0]; got != "getppid=-1 errno=42" {
		t.Fatalf("after restore: %s, want the filter to make getppid fail with errno 42", got)
	}
}

// A root process that became uid 1000 keeping some capabilities (effective, permitted,
// inheritable, ambient, a smaller bounding set) and securebits, with an oom_score_adj, an
// audit login uid and a membarrier registration, has them all after the restore: it reads
// them itself, binds a port below 1024 and issues the membarrier it registered for.
func TestRestoreCapabilitiesAndProcessAttributes(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	p := testutil.Start(t, testutil.Build(t, "caps"), dir)
	report := filepath.Join(dir, "report")
	testutil.WaitFor(t, "caps to be ready", func() bool { return len(testutil.Lines(report)) >= 1 })
	if l := testutil.Lines(report)[0]; l != "ready" {
		t.Fatal(l)
	}
	askTwice(t, p, report, 1)
}
