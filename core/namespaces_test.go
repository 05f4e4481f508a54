package core_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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
	// (The old namespace is gone: its inode number may be the new one's.)
	if got := nsLink(t, r, "pid"); got == nsLink(t, os.Getpid(), "pid") {
		t.Fatalf("restored root is in gocr's pid namespace %s", got)
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

// askIn connects to 127.0.0.1:port inside pid's network namespace and returns what it says.
func askIn(pid, port int) (string, error) {
	type result struct {
		s   string
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends in the other namespace
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: err}
			return
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		b, err := io.ReadAll(c)
		ch <- result{string(b), err}
	}()
	r := <-ch
	return r.s, r.err
}

// A container of its own pid, UTS, IPC and network namespaces (unshare) runs a loopback
// server, System V semaphores and a message queue, and two processes on a unix socketpair. It
// is dumped from the host and restored: the server answers from inside the new network
// namespace and goes on counting its clients, the counter goes on, and the workload finds its
// semaphores, messages and host name as they were.
func TestRestoreContainerNetworkAndIPC(t *testing.T) {
	testutil.RequireRoot(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare (util-linux) is not installed")
	}
	bin := testutil.Build(t, "container")
	dir := t.TempDir()
	port := freePort(t)
	log := filepath.Join(dir, "root.log")
	u := testutil.Start(t, unshare, "--pid", "--fork", "--uts", "--ipc", "--net", bin, dir, strconv.Itoa(port))
	testutil.WaitFor(t, "the container to count", func() bool { return lastInt(t, log) >= 3 })
	root := testutil.Children(u.Pid)[0]
	if got, err := askIn(root, port); err != nil || got != "pong 1\n" {
		t.Fatalf("the server in the container said %q, %v; want pong 1", got, err)
	}
	img := dump(t, core.Kill, root)
	u.Reap()
	at := lastInt(t, log)

	res := restore(t, img)
	r := res.Roots[0]
	for _, kind := range []string{"pid", "net", "ipc", "uts"} {
		if nsLink(t, r, kind) == nsLink(t, os.Getpid(), kind) {
			t.Errorf("the restored container shares gocr's %s namespace", kind)
		}
	}
	testutil.WaitFor(t, "the restored container to count on", func() bool { return lastInt(t, log) >= at+20 })
	checkSequence(t, log, at+20)
	if got, err := askIn(r, port); err != nil || got != "pong 2\n" {
		t.Fatalf("the restored server said %q, %v; want pong 2", got, err)
	}
	syscall.Kill(r, syscall.SIGUSR1)
	report := filepath.Join(dir, "report")
	testutil.WaitFor(t, "a report", func() bool { return len(testutil.Lines(report)) > 0 })
	if got := testutil.Lines(report)[0]; got != "ok" {
		t.Fatalf("the restored container reports: %s", got)
	}
}

// A container with a link of its own besides lo (a veth pair made by the test) is refused by
// the dump, which names the link and leaves the container running.
func TestDumpRefusesNetworkLinks(t *testing.T) {
	testutil.RequireRoot(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare (util-linux) is not installed")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("ip (iproute2) is not installed")
	}
	bin := testutil.Build(t, "counter")
	log := filepath.Join(t.TempDir(), "count.log")
	u := testutil.Start(t, unshare, "--net", bin, log)
	testutil.WaitFor(t, "the counter to count", func() bool { return lastInt(t, log) >= 3 })
	name := fmt.Sprintf("gocr%d", os.Getpid()%100000)
	if out, err := exec.Command(ip, "link", "add", name, "type", "veth", "peer", "name", name+"p", "netns", strconv.Itoa(u.Pid)).CombinedOutput(); err != nil {
		t.Skipf("cannot make a veth pair (%v): %s", err, out)
	}
	t.Cleanup(func() { exec.Command(ip, "link", "del", name).Run() })
	_, err = core.Dump(context.Background(), core.DumpOptions{Roots: []int{u.Pid}, Dir: filepath.Join(t.TempDir(), "img")})
	var ue *core.UnsupportedError
	if !errors.As(err, &ue) || ue.Pid != u.Pid || !strings.Contains(ue.Kind, name+"p") {
		t.Fatalf("got %v, want an UnsupportedError naming link %sp of pid %d", err, name, u.Pid)
	}
	running(t, u.Pid, log)
}
