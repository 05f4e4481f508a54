package core_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// dump dumps the tree of pid into a new directory and returns it.
func dump(t *testing.T, final core.FinalState, pids ...int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	if _, err := core.Dump(context.Background(), core.DumpOptions{Roots: pids, Dir: dir, Final: final}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	return dir
}

// restore restores dir and registers the cleanup of every restored process.
func restore(t *testing.T, dir string) *core.Restored {
	t.Helper()
	res, err := core.Restore(context.Background(), core.RestoreOptions{Dir: dir})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	for i := len(res.Pids) - 1; i >= 0; i-- {
		testutil.Adopt(t, res.Pids[i])
	}
	return res
}

// lastInt returns the first number of the last line of a log.
func lastInt(t *testing.T, path string) int {
	lines := testutil.Lines(path)
	if len(lines) == 0 {
		return 0
	}
	n, err := strconv.Atoi(strings.Fields(lines[len(lines)-1])[0])
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return n
}

// checkSequence checks that a log counts 1, 2, 3... up to at least want, without gap or
// repeat, each line holding the same number in every column.
func checkSequence(t *testing.T, path string, want int) {
	t.Helper()
	lines := testutil.Lines(path)
	for i, l := range lines {
		for _, f := range strings.Fields(l) {
			if f != strconv.Itoa(i+1) {
				t.Fatalf("%s line %d is %q, want %d: the count has a gap, a repeat or a mismatch", path, i+1, l, i+1)
			}
		}
	}
	if len(lines) < want {
		t.Fatalf("%s has %d lines, want at least %d", path, len(lines), want)
	}
}

// waitReaped waits for a process killed by a dump to be gone, reaping it as its parent.
func waitReaped(t *testing.T, p *testutil.Proc) {
	t.Helper()
	p.Reap()
	testutil.WaitFor(t, fmt.Sprintf("pid %d to be gone", p.Pid), func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/%d", p.Pid))
		return err != nil
	})
}

// dumpTree dumps the tree of p, killing it, and reaps the root and its children: the children
// are orphans of the killed root, and so ours (the test is their subreaper).
func dumpTree(t *testing.T, p *testutil.Proc) string {
	t.Helper()
	kids := testutil.Children(p.Pid)
	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	for _, k := range kids {
		testutil.KillAndReap(k)
	}
	return img
}

// restoreAndAsk dumps the tree of p twice, leaving it running and then killing it (whatever
// the first dump changed must have been undone for the second to find it again), restores
// it, and sends SIGUSR1 to p: the workloads then check their state and append a line to
// dir/report, which it returns.
func restoreAndAsk(t *testing.T, p *testutil.Proc, dir string) string {
	t.Helper()
	dump(t, core.LeaveRunning, p.Pid)
	img := dumpTree(t, p)
	restore(t, img)
	syscall.Kill(p.Pid, syscall.SIGUSR1)
	report := filepath.Join(dir, "report")
	testutil.WaitFor(t, "a report", func() bool { return len(testutil.Lines(report)) > 0 })
	return testutil.Lines(report)[0]
}

// ask sends SIGUSR1 to a workload that appends a line to report at each, and returns the
// n-th line (from 1) once it is there.
func ask(t *testing.T, pid int, report string, n int) string {
	t.Helper()
	syscall.Kill(pid, syscall.SIGUSR1)
	testutil.WaitFor(t, "a report", func() bool { return len(testutil.Lines(report)) >= n })
	return testutil.Lines(report)[n-1]
}

// askTwice has a workload check its own state after a dump that leaves it running and
// after a dump and a restore; the workload's report has had first lines already.
func askTwice(t *testing.T, p *testutil.Proc, report string, first int) {
	t.Helper()
	dump(t, core.LeaveRunning, p.Pid)
	if got := ask(t, p.Pid, report, first+1); got != "ok" {
		t.Fatalf("after a dump leaving it running: %s", got)
	}
	img := dumpTree(t, p)
	restore(t, img)
	if got := ask(t, p.Pid, report, first+2); got != "ok" {
		t.Fatalf("after the restore: %s", got)
	}
}

// refusedAtDump dumps the tree of root and checks that the dump fails with an
// UnsupportedError naming pid and saying want.
func refusedAtDump(t *testing.T, root, pid int, want string) {
	t.Helper()
	_, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{root}, Dir: filepath.Join(t.TempDir(), "img")})
	var ue *core.UnsupportedError
	if !errors.As(err, &ue) || ue.Pid != pid || !strings.Contains(err.Error(), want) {
		t.Fatalf("dump: %v, want a refusal naming pid %d and saying %q", err, pid, want)
	}
}
