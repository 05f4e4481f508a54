package core_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/internal/testutil"
)

// tids lists the thread ids of pid.
func tids(pid int) []string {
	var out []string
	ents, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, e := range ents {
		out = append(out, filepath.Base(e))
	}
	sort.Strings(out)
	return out
}

// A C program with four pthreads comes back with the same TIDs, every thread counting on in
// its thread-local variable, and the main thread still blocked in pthread_join.
func TestRestoreThreads(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	p := testutil.Start(t, testutil.Build(t, "threads"), dir)
	names := []string{"t0", "t1", "t2", "t3"}
	for _, n := range names {
		testutil.WaitFor(t, n+" to count", func() bool { return lastInt(t, filepath.Join(dir, n+".log")) >= 3 })
	}
	testutil.WaitFor(t, "main to block in join", func() bool { return lastInt(t, filepath.Join(dir, "main.log")) >= 20 })
	before := tids(p.Pid)
	if len(before) != 5 {
		t.Fatalf("%d threads, want 5", len(before))
	}
	dump(t, core.LeaveRunning, p.Pid) // a checkpoint every thread goes on from
	for _, n := range names {
		running(t, p.Pid, filepath.Join(dir, n+".log"))
	}
	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	at := map[string]int{}
	for _, n := range names {
		at[n] = lastInt(t, filepath.Join(dir, n+".log"))
	}
	restore(t, img)
	if got := tids(p.Pid); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatalf("threads after restore %v, before %v", got, before)
	}
	for _, n := range names {
		log := filepath.Join(dir, n+".log")
		testutil.WaitFor(t, n+" to go on", func() bool { return lastInt(t, log) >= at[n]+10 })
		checkSequence(t, log, at[n]+10)
	}
	checkSequence(t, filepath.Join(dir, "main.log"), 20)
	if s, _ := testutil.ProcState(p.Pid); s != "S" {
		t.Errorf("main thread in state %q, want S (blocked in pthread_join)", s)
	}
}

// A Go program, with its runtime's threads, goroutines blocked on channels, a ticker and a
// busy garbage collector, goes on after a restore.
func TestRestoreGoProgram(t *testing.T) {
	testutil.RequireRoot(t)
	log := filepath.Join(t.TempDir(), "go.log")
	p := testutil.Start(t, testutil.BuildGo(t, "gocount"), log)
	testutil.WaitFor(t, "gocount to count", func() bool { return lastInt(t, log) >= 20 })
	if n := len(tids(p.Pid)); n < 3 {
		t.Fatalf("the Go program has %d threads; the test wants several", n)
	}
	dump(t, core.LeaveRunning, p.Pid) // a checkpoint it goes on from
	running(t, p.Pid, log)
	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	at := lastInt(t, log)
	restore(t, img)
	testutil.WaitFor(t, "gocount to go on", func() bool { return lastInt(t, log) >= at+50 })
	checkSequence(t, log, at+50)
}

// An epoll instance comes back with its watched set (level- and edge-triggered), and an
// eventfd with its count and semaphore mode.
func TestRestoreEpollEventfd(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "epoll")
	if got, want := restoreAndAsk(t, p, dir), "ready=111,222 sem=1 left=4"; got != want {
		t.Fatalf("after restore: %s, want %s", got, want)
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// A timerfd (time left, interval), a signalfd (with its signal pending), an inotify instance
// (watch descriptors kept), a memfd (content, offset) and a private /dev/zero mapping come
// back.
func TestRestoreFileKinds(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "kinds")
	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	restore(t, img)
	syscall.Kill(p.Pid, syscall.SIGUSR1)
	report := filepath.Join(dir, "report")
	testutil.WaitFor(t, "a report", func() bool { return len(testutil.Lines(report)) > 0 })
	if got, want := testutil.Lines(report)[0], "timer=3600 sig=12 inotify=2:touched memfd=Fd bytes zero=zero map"; got != want {
		t.Fatalf("after restore:\n got %s\nwant %s", got, want)
	}
}

// A process whose binary was deleted while it ran (an upgrade) comes back from the copy of the
// binary saved in the image.
func TestRestoreDeletedBinary(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.CopyBinary(t, testutil.Build(t, "counter"))
	log := filepath.Join(t.TempDir(), "count.log")
	p := testutil.Start(t, bin, log)
	testutil.WaitFor(t, "counter to count", func() bool { return lastInt(t, log) >= 3 })
	os.Remove(bin)
	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	at := lastInt(t, log)
	restore(t, img)
	testutil.WaitFor(t, "counter to go on", func() bool { return lastInt(t, log) >= at+10 })
	checkSequence(t, log, at+10)
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.Pid)); !strings.HasSuffix(exe, " (deleted)") {
		t.Errorf("restored exe link %q, want a deleted file", exe)
	}
}

// POSIX timers come back under the same IDs, still firing, with the time they had left; the
// interval timer goes on firing too.
func TestRestorePosixTimers(t *testing.T) {
	testutil.RequireRoot(t)
	log := filepath.Join(t.TempDir(), "timer.log")
	p := testutil.Start(t, testutil.Build(t, "ptimer"), log)
	testutil.WaitFor(t, "timer A to fire", func() bool { return lastInt(t, log) >= 10 })
	// /proc/PID/timers lists the timers in no set order: compare them sorted.
	timerSet := func() string {
		blocks := strings.Split(testutil.ReadFile(fmt.Sprintf("/proc/%d/timers", p.Pid)), "ID: ")
		sort.Strings(blocks)
		return strings.Join(blocks, "ID: ")
	}
	timers := timerSet()
	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	at := lastInt(t, log)
	restore(t, img)
	testutil.WaitFor(t, "timer A to go on firing", func() bool { return lastInt(t, log) >= at+20 })
	if got := timerSet(); got != timers {
		t.Errorf("timers after restore:\n%s\nbefore:\n%s", got, timers)
	}
	// Two reports 100 ms apart: timer B's time left, and the interval timer's count, which must
	// grow between them (it fires every 5 ms) had it come back.
	report := func(n int) (b, alarms int) {
		syscall.Kill(p.Pid, syscall.SIGUSR1)
		testutil.WaitFor(t, "a timer report", func() bool { return strings.Count(testutil.ReadFile(log), "b=") >= n })
		for _, l := range testutil.Lines(log) {
			if strings.HasPrefix(l, "b=") {
				fmt.Sscanf(l, "b=%d alarms=%d", &b, &alarms)
			}
		}
		return b, alarms
	}
	b, alarms1 := report(1)
	if b != 3600 {
		t.Errorf("timer B after restore has %d s left, want 3600", b)
	}
	time.Sleep(100 * time.Millisecond)
	if _, alarms2 := report(2); alarms2-alarms1 < 5 {
		t.Errorf("interval timer: %d alarms in 100 ms after the restore, want it to go on firing every 5 ms", alarms2-alarms1)
	}
}

// A System V segment shared by a parent and its child, already removed, comes back under its
// id, with its content, shared again.
func TestRestoreSysvShm(t *testing.T) {
	testutil.RequireRoot(t)
	log := filepath.Join(t.TempDir(), "shm.log")
	p := testutil.Start(t, testutil.Build(t, "sysvshm"), log)
	testutil.WaitFor(t, "ping", func() bool { return lastInt(t, log) >= 10 })
	id := strings.TrimSpace(testutil.ReadFile(log + ".id"))
	img := dumpTree(t, p)
	at := lastInt(t, log)
	res := restore(t, img)
	if len(res.Pids) != 2 {
		t.Fatalf("restored %v", res.Pids)
	}
	testutil.WaitFor(t, "echo to follow ping", func() bool {
		lines := testutil.Lines(log)
		var ping, echo int
		fmt.Sscan(lines[len(lines)-1], &ping, &echo)
		return ping > at+10 && echo > at && ping-echo <= 3
	})
	if maps := testutil.ReadFile(fmt.Sprintf("/proc/%d/maps", p.Pid)); !strings.Contains(maps, " "+id+" ") || !strings.Contains(maps, "/SYSV") {
		t.Errorf("segment %s not attached after restore:\n%s", id, maps)
	}
}

// A pidfd of a child comes back referring to the restored child: the parent finds it alive,
// kills it and waits for it through the pidfd.
func TestRestorePidfd(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "pidfds")
	kids := testutil.Children(p.Pid)
	if len(kids) != 1 {
		t.Fatalf("pidfds has %d children", len(kids))
	}
	// A pidfd of a process outside the tree (here, of the test) is refused by name.
	outside, _ := testutil.StartReady(t, "pidfds", "parent")
	_, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{outside.Pid}, Dir: filepath.Join(t.TempDir(), "img")})
	if !errors.Is(err, core.ErrUnsupported) || !strings.Contains(err.Error(), fmt.Sprintf("pidfd of process %d, outside the dumped trees", os.Getpid())) {
		t.Fatalf("dump of a pidfd of a process outside: %v", err)
	}

	if got, want := restoreAndAsk(t, p, dir), fmt.Sprintf("alive=1 reaped=%d child=%d", kids[0], kids[0]); got != want {
		t.Fatalf("after restore: %s, want %s", got, want)
	}
}

// A child forked by a worker thread (listed under that thread, not the main one) is dumped
// with its parent, and both come back counting, the child still the parent's.
func TestRestoreChildOfAThread(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	p := testutil.Start(t, testutil.Build(t, "threadfork"), dir)
	for _, name := range []string{"main", "child"} {
		testutil.WaitFor(t, name+" to count", func() bool { return lastInt(t, filepath.Join(dir, name+".log")) >= 3 })
	}
	kids := testutil.Children(p.Pid)
	if len(kids) != 1 {
		t.Fatalf("children %v, want one", kids)
	}
	child := kids[0]
	img := dumpTree(t, p)
	if testutil.Alive(child) {
		t.Fatalf("the dump killed the parent and left its child %d running", child)
	}
	at := lastInt(t, filepath.Join(dir, "child.log"))
	res := restore(t, img)
	if len(res.Pids) != 2 {
		t.Fatalf("restored %v, want the parent and its child", res.Pids)
	}
	testutil.WaitFor(t, "the child to go on", func() bool { return lastInt(t, filepath.Join(dir, "child.log")) >= at+10 })
	checkSequence(t, filepath.Join(dir, "child.log"), at+10)
	checkSequence(t, filepath.Join(dir, "main.log"), 3)
	if ppid, _, _, _ := testutil.Stat(child); ppid != p.Pid {
		t.Fatalf("the restored child's parent is %d, want %d", ppid, p.Pid)
	}
}

// When that number holds another file now, no restore could watch it again: the dump refuses
// it by name, before any image is written, and the process goes on as it was.
func TestDumpRefusesEpollOfAClosedFd(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "epollgone", "taken")
	refusedAtDump(t, p.Pid, p.Pid, "epoll instance watching an fd number that holds another file")
	running(t, p.Pid, filepath.Join(dir, "count.log"))
}

// A parent with two zombie children (one exited with 7, one killed by SIGTERM) comes back
// with both zombies, same pids, its own; reaping them then tells how each ended.
func TestRestoreZombies(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	p := testutil.Start(t, testutil.Build(t, "zombies"), dir)
	testutil.WaitFor(t, "the zombies", func() bool { return len(testutil.Lines(filepath.Join(dir, "pids"))) == 1 })
	var a, b int
	fmt.Sscan(testutil.Lines(filepath.Join(dir, "pids"))[0], &a, &b)
	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	for _, z := range []int{a, b} {
		testutil.WaitFor(t, fmt.Sprintf("zombie %d to be reaped", z), func() bool { testutil.ReapOrphans(); return !testutil.Alive(z) })
	}
	res := restore(t, img)
	if len(res.Pids) != 1 {
		t.Fatalf("restored %v: want the parent (its zombies are no running processes)", res.Pids)
	}
	for _, z := range []int{a, b} {
		st, _ := testutil.ProcState(z)
		ppid, _, _, _ := testutil.Stat(z)
		if st != "Z" || ppid != p.Pid {
			t.Fatalf("pid %d after the restore: state %q, parent %d; want a zombie of %d", z, st, ppid, p.Pid)
		}
	}
	syscall.Kill(p.Pid, syscall.SIGUSR1)
	report := filepath.Join(dir, "report")
	testutil.WaitFor(t, "the report", func() bool { return len(testutil.Lines(report)) > 0 })
	if got := testutil.Lines(report)[0]; got != "a exit 7 b signal 15" {
		t.Fatalf("the restored parent reaped: %q, want %q", got, "a exit 7 b signal 15")
	}
}

// Threads under a seccomp filter synchronised across them (TSYNC), with a POSIX timer that
// signals one of them, come back filtered and ticking, and SIGTERM still ends the process.
func TestRestoreTSyncFilterAndThreadTimer(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "tsync")
	askTwice(t, p, filepath.Join(dir, "report"), 0)
	syscall.Kill(p.Pid, syscall.SIGTERM)
	testutil.WaitFor(t, "SIGTERM to end the restored process", func() bool {
		st, _ := testutil.ProcState(p.Pid)
		return st == "" || st == "Z"
	})
}

// Two processes sharing one fd table (clone with CLONE_FILES, not threads) would come back
// with a table each: the dump refuses it by name, and both go on.
func TestDumpRefusesASharedFdTable(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "sharedfds")
	kids := testutil.Children(p.Pid)
	if len(kids) != 1 {
		t.Fatalf("children %v, want one", kids)
	}
	refusedAtDump(t, p.Pid, kids[0], "fd table shared with its parent")
	running(t, p.Pid, filepath.Join(dir, "count.log"))
	running(t, kids[0], filepath.Join(dir, "child.log"))
}
