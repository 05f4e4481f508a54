package core_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/internal/testutil"
)

// A dump into a file system that fills up fails with ENOSPC named, leaves the process running
// as it was (not stopped, not traced), and leaves no image, partial or whole.
func TestDumpOnAFullDisk(t *testing.T) {
	testutil.RequireRoot(t)
	mnt := t.TempDir()
	if err := syscall.Mount("gocr-full", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a small tmpfs here: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	p, dir := testutil.StartReady(t, "bigmem", "8")
	img := filepath.Join(mnt, "img")
	_, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("dump on a full disk: %v, want ENOSPC", err)
	}
	if ents, _ := os.ReadDir(mnt); len(ents) != 0 {
		t.Fatalf("the failed dump left %v in %s", ents, mnt)
	}
	if st, tracer := testutil.ProcState(p.Pid); st == "T" || st == "t" || tracer != 0 {
		t.Fatalf("after the failed dump the process is %s, traced by %d", st, tracer)
	}
	// It still checks its memory whole.
	syscall.Kill(p.Pid, syscall.SIGUSR1)
	report := filepath.Join(dir, "report")
	testutil.WaitFor(t, "a report", func() bool { return len(testutil.Lines(report)) > 0 })
	if r := testutil.Lines(report)[0]; !strings.HasPrefix(r, "ok") {
		t.Fatalf("after the failed dump the process found its memory %q", r)
	}
}

// A listener whose port another process took since the dump: check mode and the restore both
// say which port and who holds it, before any process is made.
func TestRestoreRefusesATakenPort(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "listener")
	port := strings.TrimSpace(testutil.ReadFile(filepath.Join(dir, "port")))
	img := filepath.Join(t.TempDir(), "img")
	if _, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	p.Reap()
	l, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatalf("take the port: %v", err)
	}
	defer l.Close()
	testutil.Refused(t, core.RestoreOptions{Dir: img}, "TCP port 127.0.0.1:"+port+" is taken, held by pid "+strconv.Itoa(os.Getpid()), p.Pid)
}

// A process whose working directory was removed since the dump: both say so.
func TestRestoreRefusesAGoneCwd(t *testing.T) {
	testutil.RequireRoot(t)
	cwd := t.TempDir()
	log := filepath.Join(t.TempDir(), "count.log")
	cmd := exec.Command(testutil.Build(t, "counter"), log)
	cmd.Dir = cwd
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &testutil.Proc{Pid: cmd.Process.Pid, Cmd: cmd}
	t.Cleanup(p.Kill)
	testutil.WaitFor(t, "the counter", func() bool { return testutil.LastCount(log) >= 3 })
	img := filepath.Join(t.TempDir(), "img")
	if _, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	p.Reap()
	os.Remove(cwd)
	testutil.Refused(t, core.RestoreOptions{Dir: img}, "its working directory "+cwd+" is gone", p.Pid)
}

// A process whose memory cgroup's limit was lowered below its memory since the dump: check
// mode and the restore say so, naming the cgroup, instead of a restore the OOM killer ends.
func TestRestoreRefusesAMemoryLimitTooLow(t *testing.T) {
	testutil.RequireRoot(t)
	var dir string
	for _, l := range strings.Split(testutil.ReadFile("/proc/self/cgroup"), "\n") {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && strings.Contains(","+f[1]+",", ",memory,") {
			dir = filepath.Join("/sys/fs/cgroup/memory", f[2], fmt.Sprintf("gocr-test-mem-%d", os.Getpid()))
		}
	}
	if dir == "" || os.Mkdir(dir, 0o755) != nil {
		t.Skip("no cgroup v1 memory hierarchy here to make a child cgroup in")
	}
	t.Cleanup(func() { os.Remove(dir) })
	p, _ := testutil.StartReady(t, "bigmem", "64")
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(p.Pid)), 0); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "img")
	if _, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	p.Reap()
	testutil.WaitFor(t, "the cgroup to be empty", func() bool { return strings.TrimSpace(testutil.ReadFile(filepath.Join(dir, "cgroup.procs"))) == "" })
	if err := os.WriteFile(filepath.Join(dir, "memory.limit_in_bytes"), []byte("16M"), 0); err != nil {
		t.Fatal(err)
	}
	testutil.Refused(t, core.RestoreOptions{Dir: img}, "memory cgroup "+dir+": the cgroup the processes go back to allows", p.Pid)
}

// An oom_score_adj lower than the restoring gocr's own cannot be given without
// CAP_SYS_RESOURCE (which root lacks on some machines, and gocr does not need otherwise):
// check mode and the restore say so before any process is made. The test raises its own
// oom_score_adj (and puts it back: lowering it to its old value needs no capability).
func TestRestoreRefusesALowerOOMScoreAdj(t *testing.T) {
	testutil.RequireRoot(t)
	var eff uint64
	for _, l := range testutil.Lines("/proc/self/status") {
		fmt.Sscanf(l, "CapEff: %x", &eff)
	}
	if eff&(1<<24) != 0 {
		t.Skip("gocr holds CAP_SYS_RESOURCE here: it may lower oom_score_adj")
	}
	p, _ := testutil.StartReady(t, "sockets")
	img := dumpTree(t, p)
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte("100"), 0); err != nil {
		t.Fatal(err)
	}
	defer os.WriteFile("/proc/self/oom_score_adj", []byte("0"), 0)
	testutil.Refused(t, core.RestoreOptions{Dir: img}, "its oom_score_adj 0 is lower than gocr's 100, which needs CAP_SYS_RESOURCE", p.Pid)
}

// A file the image's processes had open that is gone since is named, with the process and
// fd that held it, by check mode and by the restore before anything is made.
func TestRestoreRefusesAMissingOpenFile(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "pathfds")
	fd := -1
	for n := 3; n < 20 && fd < 0; n++ {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", p.Pid, n)); l == filepath.Join(dir, "file") {
			fd = n
		}
	}
	img := dumpTree(t, p)
	if err := os.Remove(filepath.Join(dir, "file")); err != nil {
		t.Fatal(err)
	}
	testutil.Refused(t, core.RestoreOptions{Dir: img}, fmt.Sprintf("open file of pid %d fd %d is missing", p.Pid, fd), p.Pid)
}
