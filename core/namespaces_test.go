package core_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/internal/testutil"
)

// nsLine is one line of an nsjob log: what the process saw of itself.
type nsLine struct {
	n, pid, ppid int
	host         string
}

func nsLog(t *testing.T, path string) []nsLine {
	t.Helper()
	var out []nsLine
	for i, l := range testutil.Lines(path) {
		f := strings.Fields(l)
		if len(f) < 3 {
			t.Fatalf("%s line %d is %q", path, i+1, l)
		}
		var ln nsLine
		ln.n, _ = strconv.Atoi(f[0])
		ln.pid, _ = strconv.Atoi(f[1])
		ln.ppid, _ = strconv.Atoi(f[2])
		if len(f) > 3 {
			ln.host = f[3]
		}
		out = append(out, ln)
	}
	return out
}

// checkNsLog checks that a log counts 1, 2, 3... past want without a gap or a repeat, and
// that every line saw the pid, parent and host name of the first.
func checkNsLog(t *testing.T, path string, want int) nsLine {
	t.Helper()
	lines := nsLog(t, path)
	if len(lines) < want {
		t.Fatalf("%s has %d lines, want at least %d", path, len(lines), want)
	}
	first := lines[0]
	for i, l := range lines {
		if l.n != i+1 {
			t.Fatalf("%s line %d counts %d: a gap or a repeat", path, i+1, l.n)
		}
		if l.pid != first.pid || l.ppid != first.ppid || l.host != first.host {
			t.Fatalf("%s line %d: pid %d ppid %d host %q, but the process began as pid %d ppid %d host %q",
				path, i+1, l.pid, l.ppid, l.host, first.pid, first.ppid, first.host)
		}
	}
	return first
}

func nsLink(t *testing.T, pid int, kind string) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// nsPids is the NSpid line of a process: its pid in each pid namespace, outermost first.
func nsPids(t *testing.T, pid int) []int {
	t.Helper()
	var out []int
	for _, f := range strings.Fields(statusField(pid, "NSpid")) {
		n, _ := strconv.Atoi(f)
		out = append(out, n)
	}
	return out
}

// A container made by unshare (its own pid and UTS namespaces) is dumped from the host by its
// init's host pid and restored: the tree sees the same pids, parents and host name as before,
// in a new pid namespace, and counts on.
func TestRestoreContainerPidNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare (util-linux) is not installed")
	}
	bin := testutil.Build(t, "nsjob")
	dir := t.TempDir()
	u := testutil.Start(t, unshare, "--pid", "--fork", "--uts", bin, dir, "box-gocr")
	for _, name := range []string{"root", "a", "b"} {
		testutil.WaitFor(t, name+" to count", func() bool { return len(testutil.Lines(filepath.Join(dir, name+".log"))) >= 3 })
	}
	root := testutil.Children(u.Pid)[0]
	oldNs := nsLink(t, root, "pid")
	img := dump(t, core.Kill, root)
	u.Reap() // unshare ends with its child; the namespace's other processes died with their init
	at := map[string]int{}
	for _, name := range []string{"root", "a", "b"} {
		at[name] = len(testutil.Lines(filepath.Join(dir, name+".log")))
	}

	res := restore(t, img)
	if len(res.Pids) != 3 {
		t.Fatalf("restored pids %v, want 3", res.Pids)
	}
	r := res.Roots[0]
	testutil.Adopt(t, r)
	if ns := nsPids(t, r); len(ns) != 2 || ns[1] != 1 {
		t.Fatalf("restored root's NSpid is %v, want its host pid then 1", ns)
	}
	if got := nsLink(t, r, "pid"); got == oldNs || got == nsLink(t, os.Getpid(), "pid") {
		t.Fatalf("restored root is in pid namespace %s: want a new one (the old was %s)", got, oldNs)
	}
	if nsLink(t, r, "uts") == nsLink(t, os.Getpid(), "uts") {
		t.Fatal("restored root shares gocr's UTS namespace")
	}
	for _, name := range []string{"root", "a", "b"} {
		log := filepath.Join(dir, name+".log")
		testutil.WaitFor(t, name+" to count on", func() bool { return len(testutil.Lines(log)) >= at[name]+20 })
		first := checkNsLog(t, log, at[name]+20)
		if first.host != "box-gocr" {
			t.Errorf("%s saw host name %q, want box-gocr", name, first.host)
		}
		if name == "root" && (first.pid != 1 || first.ppid != 0) {
			t.Errorf("root saw itself as pid %d with parent %d, want 1 and 0", first.pid, first.ppid)
		}
	}
}

// A tree dumped on the host and left running is restored three times at once with NewPidns:
// each copy runs in a pid namespace of its own under a gocr init, with the pids the tree had
// (which the original still holds on the host). SIGTERM to an init ends its copy, and the init
// ends as the copy's root did.
func TestRestoreNewPidnsThreeCopies(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.Build(t, "nsjob")
	dir := t.TempDir()
	p := testutil.Start(t, bin, dir)
	for _, name := range []string{"root", "a", "b"} {
		testutil.WaitFor(t, name+" to count", func() bool { return len(testutil.Lines(filepath.Join(dir, name+".log"))) >= 3 })
	}
	want := map[int]bool{p.Pid: true}
	for _, c := range testutil.Children(p.Pid) {
		want[c] = true
		for _, g := range testutil.Children(c) {
			want[g] = true
		}
	}
	img := dump(t, core.LeaveRunning, p.Pid)

	var wg sync.WaitGroup
	copies := make([]*core.Restored, 3)
	errs := make([]error, 3)
	for i := range copies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			copies[i], errs[i] = core.Restore(context.Background(), core.RestoreOptions{Dir: img, NewPidns: true})
		}()
	}
	wg.Wait()
	for i, res := range copies {
		if errs[i] != nil {
			t.Fatalf("copy %d: %v", i, errs[i])
		}
		testutil.Adopt(t, res.Roots[0])
		for _, pid := range res.Pids {
			testutil.Adopt(t, pid)
		}
	}
	namespaces := map[string]bool{}
	for i, res := range copies {
		init := res.Roots[0]
		if ns := nsPids(t, init); len(ns) != 2 || ns[1] != 1 {
			t.Fatalf("copy %d: init's NSpid is %v, want its host pid then 1", i, ns)
		}
		namespaces[nsLink(t, init, "pid")] = true
		if len(res.Pids) != 3 {
			t.Fatalf("copy %d: pids %v, want 3", i, res.Pids)
		}
		for _, pid := range res.Pids {
			ns := nsPids(t, pid)
			if len(ns) != 2 || !want[ns[1]] {
				t.Fatalf("copy %d: pid %d has NSpid %v, want one of the tree's pids %v inside", i, pid, ns, want)
			}
			if pid == ns[1] {
				t.Fatalf("copy %d: pid %d is the original's", i, pid)
			}
			// Each copy's process runs: the position of its log's fd moves on.
			pos := func() int {
				for _, l := range strings.Split(testutil.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/3", pid)), "\n") {
					if v, ok := strings.CutPrefix(l, "pos:"); ok {
						n, _ := strconv.Atoi(strings.TrimSpace(v))
						return n
					}
				}
				return -1
			}
			start := pos()
			testutil.WaitFor(t, fmt.Sprintf("copy %d pid %d to write on", i, pid), func() bool { return pos() > start })
		}
	}
	if len(namespaces) != 3 {
		t.Fatalf("the copies are in %d pid namespaces, want 3", len(namespaces))
	}
	if !testutil.Alive(p.Pid) {
		t.Fatal("the original tree died")
	}
	init := copies[0].Roots[0]
	syscall.Kill(init, syscall.SIGTERM)
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(init, &ws, 0, nil); err != nil {
		t.Fatal(err)
	}
	if !ws.Exited() || ws.ExitStatus() != 128+int(syscall.SIGTERM) {
		t.Fatalf("init ended with %v, want exit 143 (its root killed by the SIGTERM it passed on)", ws)
	}
	for _, pid := range copies[0].Pids {
		testutil.WaitFor(t, fmt.Sprintf("pid %d of the ended copy to go", pid), func() bool { return !testutil.Alive(pid) })
	}
}
