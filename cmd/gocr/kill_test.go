package main

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gocr/gocr/internal/testutil"
)

// running says whether pid is a live process (not gone, not a zombie).
func running(pid int) bool {
	st, _ := testutil.ProcState(pid)
	return st != "" && st != "Z" && st != "X"
}

// treeOf lists pid and its descendants.
func treeOf(pid int) []int {
	out := []int{pid}
	for _, c := range testutil.Children(pid) {
		out = append(out, treeOf(c)...)
	}
	return out
}

// counts checks each log is a run of consecutive counts (first field 1, 2, 3...) and returns
// the last of each.
func counts(t *testing.T, logs []string) []int {
	t.Helper()
	var out []int
	for _, l := range logs {
		lines := testutil.Lines(l)
		for i, line := range lines {
			if f := strings.Fields(line); len(f) == 0 || f[0] != strconv.Itoa(i+1) || (len(f) == 2 && f[1] != f[0]) {
				t.Fatalf("%s line %d is %q: the process's memory or file changed", l, i+1, line)
			}
		}
		out = append(out, len(lines))
	}
	return out
}

// gocr dump killed with SIGKILL at random moments, 50 times (one in three with
// --leave-running), of a tree of four processes sharing a page and of a process of five threads: after each kill the workload is either
// running as it was (not stopped, not traced, its signals and CPUs its own, every log counting
// on with no gap or repeat) or, when the kill came after the image was complete and the tree
// killed, gone with a complete image; never half. The partial directory a killed dump leaves
// is removed by the next dump to the same place.
func TestCLIKilledDumps(t *testing.T) {
	testutil.RequireRoot(t)
	const rounds = 50
	outcomes := map[string]int{}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for i := 0; i < rounds; i++ {
		dir := t.TempDir()
		name, logs := "tree", []string{"root", "a", "b", "c"}
		if i%2 == 1 {
			name, logs = "threads", []string{"main", "t0", "t1", "t2", "t3"}
		}
		for j := range logs {
			logs[j] = filepath.Join(dir, logs[j]+".log")
		}
		p := testutil.Start(t, testutil.Build(t, name), dir)
		testutil.WaitFor(t, name+" to count", func() bool {
			for _, l := range logs {
				if testutil.LastCount(l) < 3 {
					return false
				}
			}
			return true
		})
		pids := treeOf(p.Pid)
		for _, pid := range pids {
			t.Cleanup(func() { testutil.KillAndReap(pid) })
		}
		mask := testutil.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid))
		base := t.TempDir()
		img := filepath.Join(base, "img")
		args := []string{"-v", "dump", "-t", strconv.Itoa(p.Pid), "-D", img}
		if i%3 == 2 {
			args = append(args, "--leave-running") // killed while letting the tree go, too
		}
		cmd := exec.Command(gocrBin, args...)
		var errb strings.Builder
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(rng.Intn(40000)) * time.Microsecond
		time.Sleep(delay)
		fatal := func(format string, args ...any) {
			t.Helper()
			said := errb.String()
			if len(said) > 3000 {
				said = said[len(said)-3000:]
			}
			t.Fatalf("round %d (%s, gocr killed after %v): %s\ngocr said:\n%s", i, name, delay, fmt.Sprintf(format, args...), said)
		}
		cmd.Process.Kill()
		cmd.Wait()

		alive := settle(pids)
		_, complete := os.Stat(filepath.Join(img, "index.img"))
		switch {
		case alive == 0:
			if complete != nil {
				fatal("the tree is gone and no complete image is left")
			}
			outcomes["gone, image complete"]++
			p.Reap()
			continue
		case alive < len(pids):
			var states []string
			for _, pid := range pids {
				st, _ := testutil.ProcState(pid)
				f := strings.Fields(testutil.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)))
				code := ""
				if len(f) > 51 {
					code = f[51]
				}
				states = append(states, fmt.Sprintf("%d:%q exit %s", pid, st, code))
			}
			fatal("%d of the %d processes of the tree are left: %v", alive, len(pids), states)
		}
		outcomes["running"]++
		for _, pid := range pids {
			if st, tracer := testutil.ProcState(pid); st == "T" || st == "t" || tracer != 0 {
				fatal("pid %d is in state %s, traced by %d", pid, st, tracer)
			}
		}
		// A thread the dead gocr left inside a call finishes it and returns to itself through
		// rt_sigreturn, which puts its mask back: give it the time to run.
		for _, field := range []string{"SigBlk", "Cpus_allowed_list"} {
			var now string
			for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				now = statusField(testutil.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid)), field)
				if now == statusField(mask, field) || time.Now().After(deadline) {
					break
				}
			}
			if a := statusField(mask, field); a != now {
				fatal("%s of pid %d is %s, %s before", field, p.Pid, now, a)
			}
		}
		countsOn(t, logs, pids)
		// The next dump to the same place removes what the killed one left.
		if out, e, code := gocr(t, "dump", "-R", "--overwrite", "-t", strconv.Itoa(p.Pid), "-D", img); code != 0 {
			t.Fatalf("round %d: dump after the killed one: exit %d\n%s%s", i, code, out, e)
		}
		ents, _ := os.ReadDir(base)
		for _, e := range ents {
			if strings.Contains(e.Name(), ".partial-") {
				t.Fatalf("round %d: %s is left in %s", i, e.Name(), base)
			}
		}
		counts(t, logs)
		for _, pid := range pids {
			testutil.KillAndReap(pid)
		}
		p.Reap()
	}
	t.Logf("%d dumps killed at random: %v", rounds, outcomes)
}

// countsOn waits until every log counted 3 more, each still a run without gap or repeat.
func countsOn(t *testing.T, logs []string, pids []int) {
	t.Helper()
	at := counts(t, logs)
	testutil.WaitForProcs(t, "the processes to count on", func() bool {
		c := counts(t, logs)
		for j := range c {
			if c[j] < at[j]+3 {
				return false
			}
		}
		return true
	}, pids...)
}

// settle waits, up to a second, until the processes the kernel kills for a dead tracer
// (PTRACE_O_EXITKILL) are dead, and returns how many of pids run.
func settle(pids []int) int {
	alive := 0
	for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
		testutil.ReapOrphans()
		alive = 0
		traced := false
		for _, pid := range pids {
			if running(pid) {
				alive++
			}
			st, tracer := testutil.ProcState(pid)
			traced = traced || st == "t" || (tracer != 0 && st != "Z") || dying(pid)
		}
		// A process still traced by the dead gocr, or with the SIGKILL of PTRACE_O_EXITKILL
		// pending, is on its way out, or being let go.
		if (!traced && (alive == 0 || alive == len(pids))) || time.Now().After(deadline) {
			return alive
		}
	}
}

// dying says whether pid has a SIGKILL pending (it is on its way out).
func dying(pid int) bool {
	st := testutil.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, f := range []string{"SigPnd", "ShdPnd"} {
		if v, err := strconv.ParseUint(statusField(st, f), 16, 64); err == nil && v&(1<<8) != 0 {
			return true
		}
	}
	return false
}

func statusField(status, name string) string {
	for _, l := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// gocr restore -d killed with SIGKILL at random moments, 40 times, of a tree of four: after
// each kill the tree is either fully restored and counting on from where it was, or not there
// at all; never some of its processes, never one stopped or traced.
func TestCLIKilledRestores(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	logs := []string{"root", "a", "b", "c"}
	for j := range logs {
		logs[j] = filepath.Join(dir, logs[j]+".log")
	}
	p := testutil.Start(t, testutil.Build(t, "tree"), dir)
	testutil.WaitFor(t, "tree to count", func() bool {
		for _, l := range logs {
			if testutil.LastCount(l) < 3 {
				return false
			}
		}
		return true
	})
	pids := treeOf(p.Pid)
	img := filepath.Join(t.TempDir(), "img")
	if out, e, code := gocr(t, "dump", "-t", strconv.Itoa(p.Pid), "-D", img); code != 0 {
		t.Fatalf("dump: exit %d\n%s%s", code, out, e)
	}
	p.Reap()
	// The logs the image's files point at, as they were at the dump: each round restores
	// from there (the fds' offsets are those of the dump).
	saved := map[string]string{}
	for _, l := range logs {
		saved[l] = testutil.ReadFile(l)
	}
	gone := func() bool {
		testutil.ReapOrphans()
		for _, pid := range pids {
			if running(pid) || testutil.Alive(pid) {
				return false
			}
		}
		return true
	}
	testutil.WaitFor(t, "the dumped tree to be gone", gone)
	outcomes := map[string]int{}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	const rounds = 40
	for i := 0; i < rounds; i++ {
		for _, l := range logs {
			os.WriteFile(l, []byte(saved[l]), 0o644)
		}
		cmd := exec.Command(gocrBin, "restore", "-d", "-D", img)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.Intn(60000)) * time.Microsecond)
		cmd.Process.Kill()
		cmd.Wait()
		alive := settle(pids)
		switch {
		case alive == 0:
			outcomes["nothing restored"]++
		case alive < len(pids):
			t.Fatalf("round %d: gocr killed: %d of the %d processes are restored: %s", i, alive, len(pids), testutil.Describe(pids...))
		default:
			outcomes["restored"]++
			for _, pid := range pids {
				if st, tracer := testutil.ProcState(pid); st == "T" || st == "t" || tracer != 0 {
					t.Fatalf("round %d: pid %d is in state %s, traced by %d, after gocr was killed", i, pid, st, tracer)
				}
			}
			countsOn(t, logs, pids)
			for _, pid := range pids {
				testutil.KillAndReap(pid)
			}
		}
		testutil.WaitFor(t, "the tree to be gone before the next round", gone)
	}
	t.Logf("%d restores killed at random: %v", rounds, outcomes)
}

// gocr dump killed while a plugin serves it: the plugin process ends with it, and the tree
// goes on, not traced.
func TestCLIKilledDumpEndsPlugin(t *testing.T) {
	pluginDir, log, p := claimedCounter(t)
	t.Setenv("GOCR_EXAMPLE_HANG", "dump")
	cmd := exec.Command(gocrBin, "--plugin", "example", "--plugin-dir", pluginDir, "dump", "-t", strconv.Itoa(p.Pid), "-D", filepath.Join(t.TempDir(), "img"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the dump to freeze the tree", func() bool { _, tracer := testutil.ProcState(p.Pid); return tracer != 0 })
	time.Sleep(100 * time.Millisecond)
	cmd.Process.Kill()
	cmd.Wait()
	plugin := filepath.Join(pluginDir, "gocr-plugin-example")
	testutil.WaitFor(t, "the plugin process to end with gocr", func() bool {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			if exe, _ := os.Readlink("/proc/" + e.Name() + "/exe"); exe == plugin && running(atoi(e.Name())) {
				return false
			}
		}
		return true
	})
	if s, tr := testutil.ProcState(p.Pid); s == "T" || s == "t" || tr != 0 {
		t.Fatalf("after gocr was killed the process is %q, traced by %d", s, tr)
	}
	at := lastCount(log)
	testutil.WaitFor(t, "the counter to go on", func() bool { return lastCount(log) >= at+3 })
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// gocr pre-dump --help lists only the flags a pre-dump takes.
func TestCLIPreDumpHelp(t *testing.T) {
	out, _, code := gocr(t, "pre-dump", "--help")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, f := range []string{"--leave-stopped", "--check-only", "--leave-running", "--track-mem "} {
		if strings.Contains(out, "  "+f) || strings.Contains(out, ", "+f) {
			t.Errorf("pre-dump --help lists %s, which a pre-dump refuses or always implies:\n%s", f, out)
		}
	}
	if !strings.Contains(out, "--prev-images-dir") {
		t.Errorf("pre-dump --help lacks --prev-images-dir:\n%s", out)
	}
}

// A second gocr dump of a tree another gocr is dumping is refused, naming the process and its
// tracer (exit code 4); the first one goes on unharmed, and the tree with it.
func TestCLITwoDumpsAtOnce(t *testing.T) {
	pluginDir, log, p := claimedCounter(t)
	t.Setenv("GOCR_EXAMPLE_HANG", "dump") // the first dump waits in its plugin
	first := exec.Command(gocrBin, "--plugin", "example", "--plugin-dir", pluginDir, "dump", "-t", strconv.Itoa(p.Pid), "-D", filepath.Join(t.TempDir(), "img"))
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the first dump to freeze the tree", func() bool { _, tracer := testutil.ProcState(p.Pid); return tracer != 0 })
	_, tracer := testutil.ProcState(p.Pid)
	t.Setenv("GOCR_EXAMPLE_HANG", "")
	_, e, code := gocr(t, "dump", "-t", strconv.Itoa(p.Pid), "-D", filepath.Join(t.TempDir(), "img2"))
	if code != 4 || !strings.Contains(e, fmt.Sprintf("pid %d", p.Pid)) || !strings.Contains(e, fmt.Sprintf("traced by pid %d", tracer)) {
		t.Fatalf("second dump: exit %d, %s; want exit 4 naming pid %d and its tracer %d", code, e, p.Pid, tracer)
	}
	if _, now := testutil.ProcState(p.Pid); now != tracer {
		t.Fatalf("the second dump took the tree from the first (tracer %d, was %d)", now, tracer)
	}
	first.Process.Signal(os.Interrupt)
	first.Wait()
	at := lastCount(log)
	testutil.WaitFor(t, "the counter to go on", func() bool { return lastCount(log) >= at+3 })
}
