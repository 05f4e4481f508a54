package core_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/internal/testutil"
)

// schedOf reads a thread's nice value, policy and allowed CPUs from /proc.
func schedOf(t *testing.T, pid, tid int) string {
	t.Helper()
	stat := testutil.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
	f := strings.Fields(stat[strings.LastIndexByte(stat, ')')+1:])
	if len(f) < 39 {
		t.Fatalf("thread %d: stat %q", tid, stat)
	}
	cpus := ""
	for _, l := range testutil.Lines(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid)) {
		if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
			cpus = strings.TrimSpace(v)
		}
	}
	return fmt.Sprintf("nice %s policy %s cpus %s", f[19-3], f[41-3], cpus)
}

// A thread's scheduling policy, nice value and CPU affinity, and the process's subreaper,
// THP and dumpable settings, come back: as the kernel shows them, and as the process itself
// asks prctl; so do its locked pages. The process is dumped while it waits in sigsuspend, whose temporary mask hides
// the real one from ptrace: the real one must come back all the same.
func TestRestoreSchedAndPrctl(t *testing.T) {
	testutil.RequireRoot(t)
	cpu := 0
	if runtime.NumCPU() > 1 {
		cpu = 1
	}
	dir := t.TempDir()
	// The workload runs as user 65534: let it into the test's directory.
	os.Chmod(filepath.Dir(dir), 0o711)
	os.Chmod(dir, 0o777)
	p := testutil.Start(t, testutil.Build(t, "sched"), dir, strconv.Itoa(cpu))
	testutil.WaitFor(t, "sched to be ready", func() bool { _, err := os.Stat(filepath.Join(dir, "ready")); return err == nil })
	var threads []int
	for _, s := range tids(p.Pid) {
		tid, _ := strconv.Atoi(s)
		threads = append(threads, tid)
	}
	if len(threads) != 2 {
		t.Fatalf("sched has %d threads, want 2", len(threads))
	}
	want := map[int]string{}
	for _, tid := range threads {
		want[tid] = "nice 7 policy 5 cpus 0" // SCHED_IDLE (nice inherited)
		if tid == p.Pid {
			want[tid] = fmt.Sprintf("nice 7 policy 3 cpus %d", cpu) // SCHED_BATCH
		}
	}
	report := filepath.Join(dir, "report")
	check := func(stage string, lines int) {
		t.Helper()
		for _, tid := range threads {
			if got := schedOf(t, p.Pid, tid); got != want[tid] {
				t.Errorf("%s: thread %d: %s, want %s", stage, tid, got, want[tid])
			}
		}
		for _, l := range testutil.Lines(fmt.Sprintf("/proc/%d/status", p.Pid)) {
			if v, ok := strings.CutPrefix(l, "VmLck:"); ok && strings.TrimSpace(v) != "8 kB" {
				t.Errorf("%s: %s locked in memory, want the 8 kB the process locked", stage, strings.TrimSpace(v))
			}
		}
		var st syscall.Stat_t
		if err := syscall.Stat(fmt.Sprintf("/proc/%d/environ", p.Pid), &st); err != nil || st.Uid != 65534 {
			t.Errorf("%s: /proc/PID/environ owned by %d (%v), want 65534: the process is not dumpable", stage, st.Uid, err)
		}
		syscall.Kill(p.Pid, syscall.SIGUSR1)
		testutil.WaitFor(t, stage+": a report", func() bool { return len(testutil.Lines(report)) >= lines })
		if got := testutil.Lines(report)[lines-1]; got != "subreaper=1 thp=1 dumpable=1 blocked=1" {
			t.Errorf("%s: the process reports %q", stage, got)
		}
	}
	check("before the dump", 1)
	dump(t, core.LeaveRunning, p.Pid)
	check("after a dump that left it running", 2)
	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	restore(t, img)
	check("after the restore", 3)
}
