package core_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/internal/testutil"
)

// A counter in heap and stack, logged through an fd at its own position, goes on after a
// restore with no gap, no repeat and no mismatch.
func TestRestoreCounterContinues(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.Build(t, "counter")
	log := filepath.Join(t.TempDir(), "count.log")
	p := testutil.Start(t, bin, log)
	testutil.WaitFor(t, "counter to count", func() bool { return lastInt(t, log) >= 5 })

	dir := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	at := lastInt(t, log)

	res := restore(t, dir)
	if res.Roots[0] != p.Pid {
		t.Fatalf("restored root is %d, want %d", res.Roots[0], p.Pid)
	}
	testutil.WaitFor(t, "restored counter to go on", func() bool { return lastInt(t, log) >= at+20 })
	checkSequence(t, log, at+20)
	if comm := strings.TrimSpace(testutil.ReadFile(fmt.Sprintf("/proc/%d/comm", p.Pid))); comm != "counter" {
		t.Errorf("restored comm is %q, want counter", comm)
	}
	if got, want := statusField(p.Pid, "Cpus_allowed_list"), statusField(os.Getpid(), "Cpus_allowed_list"); got != want {
		t.Errorf("restored CPU affinity %q, want %q", got, want)
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.Pid))
	if exe != bin {
		t.Errorf("restored exe is %q, want %q", exe, bin)
	}
}

// A tree of four keeps its pids, parents, groups and session, every process goes on
// counting, and the anonymous shared page is shared again between root and child a.
func TestRestoreTree(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.Build(t, "tree")
	dir := t.TempDir()
	p := testutil.Start(t, bin, dir)
	for _, name := range []string{"root", "a", "b", "c"} {
		testutil.WaitFor(t, name+" to count", func() bool { return lastInt(t, filepath.Join(dir, name+".log")) >= 3 })
	}
	type ids struct{ ppid, pgid, sid int }
	before := map[int]ids{}
	var walk func(pid int)
	walk = func(pid int) {
		pp, pg, s, err := testutil.Stat(pid)
		if err != nil {
			t.Fatal(err)
		}
		before[pid] = ids{pp, pg, s}
		for _, c := range testutil.Children(pid) {
			walk(c)
		}
	}
	walk(p.Pid)
	if len(before) != 4 {
		t.Fatalf("tree has %d processes, want 4", len(before))
	}

	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	for pid := range before {
		testutil.KillAndReap(pid) // orphans of the killed root came back to us
	}
	testutil.ReapOrphans()
	at := map[string]int{}
	for _, name := range []string{"root", "a", "b", "c", "shared"} {
		at[name] = lastInt(t, filepath.Join(dir, name+".log"))
	}

	res := restore(t, img)
	if len(res.Pids) != 4 {
		t.Fatalf("restored %d processes, want 4", len(res.Pids))
	}
	for pid, want := range before {
		pp, pg, s, err := testutil.Stat(pid)
		if err != nil {
			t.Fatalf("pid %d not restored: %v", pid, err)
		}
		if pid == p.Pid {
			want.ppid = os.Getpid() // the restored root is our child
		}
		if (ids{pp, pg, s}) != want {
			t.Errorf("pid %d: ppid/pgid/sid %d/%d/%d, want %d/%d/%d", pid, pp, pg, s, want.ppid, want.pgid, want.sid)
		}
	}
	for _, name := range []string{"root", "a", "b", "c"} {
		log := filepath.Join(dir, name+".log")
		testutil.WaitFor(t, name+" to go on", func() bool { return lastInt(t, log) >= at[name]+10 })
		checkSequence(t, log, at[name]+10)
	}
	// After the restore, echo must follow ping: the page is shared again.
	shared := filepath.Join(dir, "shared.log")
	testutil.WaitFor(t, "echo to follow ping", func() bool {
		lines := testutil.Lines(shared)
		if len(lines) < at["shared"]+10 {
			return false
		}
		var ping, echo int
		fmt.Sscan(lines[len(lines)-1], &ping, &echo)
		return echo > at["shared"] && ping-echo <= 2
	})
}

// Signal handler, blocked pending signal, pipe bytes, file offset and a pattern at a fixed
// address all come back.
func TestRestoreState(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "state")

	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	restore(t, img)

	// The shared file mapping is the file again: a write to the file shows in the process.
	f, err := os.OpenFile(filepath.Join(dir, "shared"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("shared after!"), 0)
	f.Close()
	if err := syscall.Kill(p.Pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(dir, "report")
	testutil.WaitFor(t, "a report", func() bool { return len(testutil.Lines(report)) > 0 })
	want := "usr1=1 pending_usr2=1 pipe=hello pipe bytes offset=12345 pattern=ok fifo=fifo bytes deleted=gone but kept shared=shared after! zero=ok"
	if got := testutil.Lines(report)[0]; got != want {
		t.Fatalf("report after restore:\n got %s\nwant %s", got, want)
	}
}

// A process restored with LeaveStopped stays stopped until Resume.
func TestRestoreLeaveStoppedAndResume(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.Build(t, "counter")
	log := filepath.Join(t.TempDir(), "count.log")
	p := testutil.Start(t, bin, log)
	testutil.WaitFor(t, "counter to count", func() bool { return lastInt(t, log) >= 3 })
	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	at := lastInt(t, log)

	res, err := core.Restore(t.Context(), core.RestoreOptions{Dir: img, LeaveStopped: true})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Adopt(t, res.Pids[0])
	testutil.WaitFor(t, "restored process to stop", func() bool { s, _ := testutil.ProcState(p.Pid); return s == "T" })
	if _, tracer := testutil.ProcState(p.Pid); tracer != 0 {
		t.Fatalf("stopped process is still traced by %d", tracer)
	}
	if got := lastInt(t, log); got != at {
		t.Fatalf("stopped process counted from %d to %d", at, got)
	}
	if n, err := core.Resume(p.Pid); err != nil || n != 1 {
		t.Fatalf("resume: %d, %v", n, err)
	}
	testutil.WaitFor(t, "resumed counter to go on", func() bool { return lastInt(t, log) >= at+10 })
	checkSequence(t, log, at+10)
}

// Two separate trees joined by a pipe are dumped with one call and restored with one call;
// the bytes in flight arrive after the restore, in order, none lost or doubled.
func TestRestoreTwoTreesSharingAPipe(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	starter := testutil.Start(t, testutil.Build(t, "pipetrees"), dir)
	if err := starter.Reap(); err != nil {
		t.Fatal(err)
	}
	var w, r int
	if _, err := fmt.Sscan(testutil.ReadFile(filepath.Join(dir, "pids")), &w, &r); err != nil {
		t.Fatal(err)
	}
	testutil.Adopt(t, w) // orphans of the starter: ours, as subreaper
	testutil.Adopt(t, r)
	log := filepath.Join(dir, "read.log")
	testutil.WaitFor(t, "reader to read", func() bool { return lastInt(t, log) >= 20 })

	img := dump(t, core.Kill, w, r)
	for _, pid := range []int{w, r} {
		testutil.KillAndReap(pid)
	}
	c, err := image.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Tree.Roots) != 2 {
		t.Fatalf("image has roots %v, want %d and %d", c.Tree.Roots, w, r)
	}
	// The pipe between them is one pipe of the image, seen from both trees.
	pipeOf := map[uint32]uint32{}
	for _, f := range c.Tree.Files {
		pipeOf[f.Id] = f.PipeId
	}
	uses := map[uint32]map[int32]bool{}
	for _, pid := range []int32{int32(w), int32(r)} {
		for _, fd := range c.Procs[pid].Fds {
			if id := pipeOf[fd.FileId]; id != 0 {
				if uses[id] == nil {
					uses[id] = map[int32]bool{}
				}
				uses[id][pid] = true
			}
		}
	}
	shared := false
	for _, u := range uses {
		shared = shared || len(u) == 2
	}
	if !shared {
		t.Fatalf("no pipe of the image is shared by both trees: %v", uses)
	}
	at := lastInt(t, log)
	res := restore(t, img)
	if len(res.Roots) != 2 {
		t.Fatalf("restored roots %v", res.Roots)
	}
	testutil.WaitFor(t, "reader to go on", func() bool { return lastInt(t, log) >= at+50 })
	checkSequence(t, log, at+50)
}

// A process in a chroot comes back in it, in the same directory; a process whose working
// directory was removed comes back in a removed directory of the same path and mode.
func TestRestoreChrootAndRemovedCwd(t *testing.T) {
	testutil.RequireRoot(t)
	for _, mode := range []string{"chroot", "deleted"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			p := testutil.Start(t, testutil.Build(t, "rootcwd"), dir, mode)
			report := filepath.Join(dir, "report")
			testutil.WaitFor(t, "rootcwd to be ready", func() bool { return len(testutil.Lines(report)) >= 1 })
			if l := testutil.Lines(report)[0]; l != "ready" {
				t.Fatal(l)
			}
			askTwice(t, p, report, 1)
		})
	}
}

// A file open under a name that was removed while another name leads to it is refused at
// dump by name, the process left running; with LinkRemap (--link-remap) it is taken through a
// hard link made for it, and comes back the same file (same inode as its other name), the
// link removed.
func TestLinkRemap(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "linkremap")
	refusedAtDump(t, p.Pid, p.Pid, "its name removed while 1 other links remain")
	report := filepath.Join(dir, "report")
	if got := ask(t, p.Pid, report, 1); got != "ok" {
		t.Fatalf("after the refused dump: %s", got)
	}
	img := filepath.Join(t.TempDir(), "img")
	if _, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img, LinkRemap: true}); err != nil {
		t.Fatalf("dump with LinkRemap: %v", err)
	}
	waitReaped(t, p)
	restore(t, img)
	if got := ask(t, p.Pid, report, 2); got != "ok" {
		t.Fatalf("after the restore: %s", got)
	}
	if links, _ := filepath.Glob(filepath.Join(dir, ".gocr-link-remap-*")); len(links) > 0 {
		t.Errorf("the link-remap link is still there: %v", links)
	}
}
