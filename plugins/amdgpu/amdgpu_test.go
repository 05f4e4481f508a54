package amdgpu_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/internal/testutil"
	"github.com/gocr/gocr/plugins/amdgpu/internal/kfd"
	"github.com/gocr/gocr/plugins/amdgpu/internal/kfdemu"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// emulate starts a KFD emulator bound over /dev/kfd and /dev/dri/renderD*, with its topology
// given to the workload and to the plugin; it is closed at the end of the test, or by close.
func emulate(t testing.TB, cfg kfdemu.Config) (emu *kfdemu.Emulator, close func()) {
	t.Helper()
	testutil.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse here: the KFD emulator needs FUSE")
	}
	if st, err := os.Stat(amdgpuKFD); err == nil && st.Mode()&os.ModeDevice != 0 {
		t.Skip("this machine has a real /dev/kfd: the emulator does not cover it")
	}
	cfg.BindHost = true
	emu, err := kfdemu.Start(cfg)
	if err != nil {
		t.Fatalf("start the KFD emulator: %v", err)
	}
	done := false
	close = func() {
		if !done {
			done = true
			if err := emu.Close(); err != nil {
				t.Errorf("close the emulator: %v", err)
			}
		}
	}
	t.Cleanup(close)
	t.Setenv("KFD_TOPOLOGY", emu.Topology())
	t.Setenv("GOCR_AMDGPU_TOPOLOGY", emu.Topology())
	return emu, close
}

const amdgpuKFD = "/dev/kfd"

func gpus(ids ...uint32) []kfdemu.GPU { return gpusAt(128, ids...) }

// gpusAt is GPUs whose render minors start at minor.
func gpusAt(minor uint32, ids ...uint32) []kfdemu.GPU {
	var out []kfdemu.GPU
	for i, id := range ids {
		out = append(out, kfdemu.DefaultGPU(id, minor+uint32(i)))
	}
	return out
}

// job is a running gpujob tree: a parent and a child, each with its own KFD state.
type job struct {
	parent *testutil.Proc
	child  int
	dir    string
}

func startJob(t testing.TB, boKiB int) *job {
	t.Helper()
	dir := t.TempDir()
	p := testutil.Start(t, testutil.Build(t, "gpujob"), dir, fmt.Sprint(boKiB))
	j := &job{parent: p, dir: dir}
	// The child is killed before the parent and the emulator, even when the set-up fails: a
	// child left holding /dev/kfd would keep the emulator's file system busy.
	t.Cleanup(func() {
		for _, kid := range testutil.Children(p.Pid) {
			testutil.KillAndReap(kid)
		}
	})
	testutil.WaitForProcs(t, "gpujob to set up its GPUs", func() bool {
		_, e1 := os.Stat(filepath.Join(dir, "parent.ready"))
		_, e2 := os.Stat(filepath.Join(dir, "child.ready"))
		return e1 == nil && e2 == nil || j.bad() != ""
	}, p.Pid)
	if b := j.bad(); b != "" {
		t.Fatalf("gpujob failed before any dump: %s", b)
	}
	kids := testutil.Children(p.Pid)
	if len(kids) != 1 {
		t.Fatalf("gpujob has children %v, want one", kids)
	}
	j.child = kids[0]
	t.Cleanup(func() { testutil.KillAndReap(j.child) })
	return j
}

func (j *job) pids() []int { return []int{j.parent.Pid, j.child} }

func (j *job) log(role string) string { return filepath.Join(j.dir, role+".log") }

// bad is the first line of a log that says a BO lost its content, or what stopped it.
func (j *job) bad() string {
	for _, role := range []string{"parent", "child"} {
		for _, l := range testutil.Lines(j.log(role)) {
			if strings.HasPrefix(l, "BAD") {
				return role + ": " + l
			}
		}
	}
	return ""
}

// counts are the last counts of parent and child.
func (j *job) counts() [2]int {
	return [2]int{testutil.LastCount(j.log("parent")), testutil.LastCount(j.log("child"))}
}

// goesOn waits until both processes counted n more, each log a run of consecutive counts with
// every BO checked at each step (a BO that lost its content ends the log with BAD).
func (j *job) goesOn(t testing.TB, n int) {
	t.Helper()
	from := j.counts()
	testutil.WaitForProcs(t, "the GPU job to go on counting", func() bool {
		c := j.counts()
		return c[0] >= from[0]+n && c[1] >= from[1]+n || j.bad() != ""
	}, j.pids()...)
	if b := j.bad(); b != "" {
		t.Fatalf("the GPU job's memory is wrong: %s", b)
	}
	for _, role := range []string{"parent", "child"} {
		for i, l := range testutil.Lines(j.log(role)) {
			if l != fmt.Sprintf("%d %s", i+1, role) {
				t.Fatalf("%s log line %d is %q: the count did not go on from where it was", role, i+1, l)
			}
		}
	}
}

// gpuMaps lists the address ranges of a process's mappings of /dev/kfd and render nodes.
func gpuMaps(t testing.TB, pid int) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(testutil.ReadFile(fmt.Sprintf("/proc/%d/maps", pid)), "\n") {
		f := strings.Fields(l)
		if len(f) >= 6 && (f[5] == "/dev/kfd" || strings.HasPrefix(f[5], "/dev/dri/renderD")) {
			out = append(out, f[0]+" "+f[1]+" "+f[5])
		}
	}
	return out
}

func plugin(t testing.TB) string {
	t.Helper()
	dir := testutil.BuildPlugin(t, "plugins/amdgpu/gocr-plugin-amdgpu", "amdgpu")
	t.Setenv("GOCR_PLUGIN_DIR", dir)
	return dir
}

func dump(t testing.TB, j *job, final core.FinalState, plugins string) (string, error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	_, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{j.parent.Pid}, Dir: dir, Final: final,
		Plugins: []string{"amdgpu"}, PluginDirs: []string{plugins}})
	return dir, err
}

// killedByDump reaps the tree a dump killed, so that its PIDs are free for the restore.
func (j *job) killedByDump(t testing.TB) {
	t.Helper()
	j.parent.Reap()
	testutil.WaitFor(t, "the dumped tree to be gone", func() bool {
		testutil.ReapOrphans()
		return !testutil.Alive(j.parent.Pid) && !testutil.Alive(j.child)
	})
}

func restore(t testing.TB, j *job, dir, plugins string) {
	t.Helper()
	res, err := core.Restore(context.Background(), core.RestoreOptions{Dir: dir, PluginDirs: []string{plugins}})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	for _, pid := range res.Pids {
		testutil.Adopt(t, pid)
	}
	if !slices.Equal(res.Pids, j.pids()) && !slices.Equal(res.Pids, []int{j.child, j.parent.Pid}) {
		t.Fatalf("restored pids %v, want %v", res.Pids, j.pids())
	}
}

// criuOps are the emulator's CRIU ops, in order.
func criuOps(emu *kfdemu.Emulator) []kfdemu.Event {
	var out []kfdemu.Event
	for _, e := range emu.Log() {
		if slices.Contains([]string{"PROCESS_INFO", "CHECKPOINT", "UNPAUSE", "RESTORE", "RESUME"}, e.Op) {
			out = append(out, e)
		}
	}
	return out
}

// noRefusedCaller fails if the emulator ever refused a caller (EBADF: not the owner nor its
// ptrace parent; EACCES: no CAP_CHECKPOINT_RESTORE).
func noRefusedCaller(t testing.TB, emu *kfdemu.Emulator) {
	t.Helper()
	for _, e := range emu.Log() {
		if e.Errno == syscall.EBADF || e.Errno == syscall.EACCES {
			t.Errorf("the emulator refused a call: %s", e)
		}
	}
}

// A two-process GPU job (each with its own KFD state on two GPUs: VRAM, GTT, USERPTR and
// doorbell BOs, a queue per GPU and an event) is dumped with the tree left running, then
// dumped and killed, and restored: every BO holds what it held, the counts go on, the device
// mappings are back at their addresses, and the emulator saw the CRIU ops in a legal order,
// each from a caller the kernel allows.
func TestDumpAndRestoreGPUJob(t *testing.T) {
	emu, _ := emulate(t, kfdemu.Config{GPUs: gpus(0x1001, 0x1002)})
	plugins := plugin(t)
	j := startJob(t, 1024)

	if _, err := dump(t, j, core.LeaveRunning, plugins); err != nil {
		t.Fatalf("dump leaving it running: %v", err)
	}
	if p := emu.Paused(); len(p) > 0 {
		t.Fatalf("processes %v are left paused after a dump", p)
	}
	j.goesOn(t, 5)

	maps := map[int][]string{}
	for _, pid := range j.pids() {
		maps[pid] = gpuMaps(t, pid)
		if len(maps[pid]) < 6 {
			t.Fatalf("pid %d maps %d GPU ranges, want 6 or more: %v", pid, len(maps[pid]), maps[pid])
		}
	}
	img, err := dump(t, j, core.Kill, plugins)
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	j.killedByDump(t)
	at := j.counts()
	restore(t, j, img, plugins)
	j.goesOn(t, 10)
	if c := j.counts(); c[0] <= at[0] || c[1] <= at[1] {
		t.Fatalf("counts %v after the restore, %v at the dump", c, at)
	}
	for _, pid := range j.pids() {
		got := gpuMaps(t, pid)
		if len(got) != len(maps[pid]) {
			t.Fatalf("pid %d: GPU mappings %v after the restore, %v before", pid, got, maps[pid])
		}
		for i := range got {
			was, now := strings.Fields(maps[pid][i]), strings.Fields(got[i])
			if was[0] != now[0] || was[1] != now[1] || was[2] != now[2] {
				t.Fatalf("pid %d: GPU mapping %q after the restore, %q before", pid, got[i], maps[pid][i])
			}
		}
	}

	// Order: per process PROCESS_INFO, CHECKPOINT, UNPAUSE at each dump, by gocr (the ptrace
	// parent); then RESTORE by the restored process itself, and RESUME of each only once both
	// are restored.
	ops := criuOps(emu)
	seq := map[int][]string{}
	for _, e := range ops {
		switch e.Op {
		case "PROCESS_INFO", "CHECKPOINT", "UNPAUSE":
			if e.Caller != os.Getpid() || e.Owner == os.Getpid() {
				t.Errorf("%s was called by %d, not by gocr (%d)", e, e.Caller, os.Getpid())
			}
			seq[e.Owner] = append(seq[e.Owner], e.Op)
		case "RESTORE":
			if e.Caller != e.Owner || !slices.Contains(j.pids(), e.Caller) {
				t.Errorf("%s: not called by the restored process itself", e)
			}
			seq[e.Caller] = append(seq[e.Caller], e.Op)
		case "RESUME":
			seq[0] = append(seq[0], e.Op)
		}
		if e.Errno != 0 {
			t.Errorf("%s failed", e)
		}
	}
	want := []string{"PROCESS_INFO", "CHECKPOINT", "UNPAUSE", "PROCESS_INFO", "CHECKPOINT", "UNPAUSE", "RESTORE"}
	for _, pid := range j.pids() {
		if !slices.Equal(seq[pid], want) {
			t.Errorf("pid %d: CRIU ops %v, want %v", pid, seq[pid], want)
		}
	}
	if !slices.Equal(seq[0], []string{"RESUME", "RESUME"}) {
		t.Errorf("RESUMEs %v, want one per process", seq[0])
	}
	lastRestore, firstResume := -1, len(ops)
	for i, e := range ops {
		if e.Op == "RESTORE" {
			lastRestore = i
		}
		if e.Op == "RESUME" && i < firstResume {
			firstResume = i
		}
	}
	if firstResume < lastRestore {
		t.Errorf("a process was resumed before every process was restored: %v", ops)
	}
	noRefusedCaller(t, emu)
	if p := emu.Paused(); len(p) > 0 {
		t.Errorf("processes %v are left paused after the restore", p)
	}
}

// kfdRecords returns the device buckets of each process's KFD record in an image.
func kfdRecords(t testing.TB, dir string) map[int32][]kfd.DeviceBucket {
	t.Helper()
	c, err := image.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32][]kfd.DeviceBucket{}
	for _, f := range c.Tree.Files {
		if f.Kind != imagepb.FileKind_FILE_KIND_PLUGIN || f.Path != "/dev/kfd" {
			continue
		}
		var rec struct {
			Devices []kfd.DeviceBucket `json:"devices"`
		}
		if err := json.Unmarshal(f.PluginBlob, &rec); err == nil && len(rec.Devices) > 0 {
			out[f.PluginPid] = rec.Devices
		}
	}
	return out
}

// A job dumped on GPUs 0x1001 and 0x1002 restores onto a machine whose GPUs have other ids,
// in another order; dumped there again, it keeps the ids it first had, and moves on to a
// third machine whose render nodes have other minors. Without the plugin the restore is
// refused naming it. A machine with a GPU fewer, or with a GPU of another device id, is refused
// by check mode and by the restore, naming what differs, and nothing is left of the restore.
func TestRestoreOnOtherGPUs(t *testing.T) {
	_, closeA := emulate(t, kfdemu.Config{GPUs: gpus(0x1001, 0x1002)})
	plugins := plugin(t)
	j := startJob(t, 256)
	img, err := dump(t, j, core.Kill, plugins)
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	j.killedByDump(t)

	// Without the plugin, the restore is refused before any process is made.
	t.Setenv("GOCR_PLUGIN_DIR", "")
	_, err = core.Restore(context.Background(), core.RestoreOptions{Dir: img})
	if !errors.Is(err, core.ErrIncompatible) || !strings.Contains(err.Error(), "gocr-plugin-amdgpu") {
		t.Fatalf("restore without the plugin: %v, want it named", err)
	}
	for _, pid := range j.pids() {
		if testutil.Alive(pid) {
			t.Fatalf("a refused restore left pid %d behind", pid)
		}
	}
	t.Setenv("GOCR_PLUGIN_DIR", plugins)
	closeA()

	// No /dev/kfd at all (this machine without the emulator): check mode says so.
	refused(t, j, img, plugins, "no usable /dev/kfd here")

	// A GPU fewer.
	_, closeB := emulate(t, kfdemu.Config{GPUs: gpus(0x1001)})
	refused(t, j, img, plugins, "dumped with 2 GPUs and 1 are here")
	closeB()
	// A GPU of another kind.
	other := gpus(0x1001, 0x1002)
	other[1].Props["device_id"] = 29730
	_, closeC := emulate(t, kfdemu.Config{GPUs: other})
	refused(t, j, img, plugins, "device_id is 29730 here, 29711 in the image")
	closeC()

	// Other ids, in another order: renderD128 is now 0x2002.
	emuD, closeD := emulate(t, kfdemu.Config{GPUs: gpus(0x2002, 0x2001)})
	if rep, err := core.Check(img); err != nil || len(rep.Problems) > 0 {
		t.Fatalf("check on other GPU ids: %v %v", err, rep)
	}
	restore(t, j, img, plugins)
	j.goesOn(t, 10)
	noRefusedCaller(t, emuD)
	img2, err := dump(t, j, core.Kill, plugins)
	if err != nil {
		t.Fatalf("dump on the second machine: %v", err)
	}
	recs := kfdRecords(t, img2)
	if len(recs) != 2 {
		t.Fatalf("KFD records of %d processes in the second image, want 2", len(recs))
	}
	for pid, devs := range recs {
		var users, actual []uint32
		for _, d := range devs {
			users, actual = append(users, d.UserGpuID), append(actual, d.ActualGpuID)
		}
		slices.Sort(users)
		slices.Sort(actual)
		if !slices.Equal(users, []uint32{0x1001, 0x1002}) || !slices.Equal(actual, []uint32{0x2001, 0x2002}) {
			t.Errorf("pid %d: GPUs %#x known to the process as %#x, want the ids it first had", pid, actual, users)
		}
	}
	j.killedByDump(t)
	closeD()
	// A third machine, whose render nodes have other minors (renderD130, renderD131).
	_, _ = emulate(t, kfdemu.Config{GPUs: gpusAt(130, 0x3001, 0x3002)})
	restore(t, j, img2, plugins)
	j.goesOn(t, 10)
}

// refused checks that check mode and the restore both refuse img here, naming want, and that
// the restore leaves no process behind.
func refused(t testing.TB, j *job, img, plugins, want string) {
	t.Helper()
	testutil.Refused(t, core.RestoreOptions{Dir: img, PluginDirs: []string{plugins}}, want, j.pids()...)
}

// A dump whose CHECKPOINT fails after PROCESS_INFO paused the queues lets them go again, and
// the job goes on as it was.
func TestFailedDumpUnpauses(t *testing.T) {
	emu, _ := emulate(t, kfdemu.Config{GPUs: gpus(0x1001, 0x1002), Fail: map[uint32]syscall.Errno{kfd.OpCheckpoint: syscall.EIO}})
	plugins := plugin(t)
	j := startJob(t, 256)
	_, err := dump(t, j, core.Kill, plugins)
	if err == nil || !strings.Contains(err.Error(), "CHECKPOINT") {
		t.Fatalf("dump: %v, want the failed CHECKPOINT named", err)
	}
	if p := emu.Paused(); len(p) > 0 {
		t.Fatalf("a failed dump left processes %v paused", p)
	}
	sawInfo, sawUnpause := false, false
	for _, e := range criuOps(emu) {
		sawInfo = sawInfo || e.Op == "PROCESS_INFO" && e.Errno == 0
		sawUnpause = sawUnpause || e.Op == "UNPAUSE" && e.Errno == 0
	}
	if !sawInfo || !sawUnpause {
		t.Fatalf("PROCESS_INFO %v, UNPAUSE %v: want both", sawInfo, sawUnpause)
	}
	j.goesOn(t, 5)
}

// A KFD without the CRIU ops the plugin needs (API 1.7) is refused by name, and a process
// that holds /dev/kfd without using a GPU is refused naming it; the tree goes on each time.
func TestRefusedDumps(t *testing.T) {
	plugins := plugin(t)
	t.Run("old KFD", func(t *testing.T) {
		emulate(t, kfdemu.Config{GPUs: gpus(0x1001), MinorVersion: 7})
		j := startJob(t, 64)
		_, err := dump(t, j, core.Kill, plugins)
		if err == nil || !strings.Contains(err.Error(), "API 1.7") || !strings.Contains(err.Error(), "1.8 or later") || !errors.Is(err, core.ErrUnsupported) {
			t.Fatalf("dump: %v, want the KFD version refused", err)
		}
		j.goesOn(t, 3)
	})
	t.Run("no GPU work", func(t *testing.T) {
		emulate(t, kfdemu.Config{GPUs: gpus(0x1001)})
		p := testutil.Start(t, "/bin/sh", "-c", "exec 3<>/dev/kfd; exec sleep 1000")
		testutil.WaitFor(t, "sleep to hold /dev/kfd", func() bool {
			l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", p.Pid))
			return l == "/dev/kfd" && strings.Contains(testutil.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.Pid)), "sleep")
		})
		_, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: filepath.Join(t.TempDir(), "img"), Plugins: []string{"amdgpu"}, PluginDirs: []string{plugins}})
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", p.Pid)) || !strings.Contains(err.Error(), "no GPU is in use") {
			t.Fatalf("dump: %v, want the process named with no GPU in use", err)
		}
		if st, tracer := testutil.ProcState(p.Pid); st == "T" || st == "t" || st == "Z" || tracer != 0 {
			t.Fatalf("the refused process is in state %q, traced by %d: want it running as before", st, tracer)
		}
	})
}

// A job in a container given two of the host's three GPUs (the third's render node is not
// there and KFD does not count it) is dumped with those two only, and restored on a host of
// four GPUs whose container is given two others: the job goes on with its BOs intact.
func TestContainerWithSomeOfTheGPUs(t *testing.T) {
	_, closeA := emulate(t, kfdemu.Config{GPUs: gpus(0x1001, 0x1002, 0x1003), Denied: []uint32{0x1001}})
	plugins := plugin(t)
	j := startJob(t, 256)
	img, err := dump(t, j, core.Kill, plugins)
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	for pid, devs := range kfdRecords(t, img) {
		if len(devs) != 2 {
			t.Fatalf("pid %d: %d GPUs in the image, want the container's 2", pid, len(devs))
		}
	}
	j.killedByDump(t)
	closeA()
	emu, _ := emulate(t, kfdemu.Config{GPUs: gpus(0x2001, 0x2002, 0x2003, 0x2004), Denied: []uint32{0x2001, 0x2004}})
	restore(t, j, img, plugins)
	j.goesOn(t, 10)
	noRefusedCaller(t, emu)
	for _, pid := range j.pids() {
		for _, m := range gpuMaps(t, pid) {
			if strings.HasSuffix(m, "renderD128") || strings.HasSuffix(m, "renderD131") {
				t.Errorf("pid %d maps %s, a GPU the container was not given", pid, m)
			}
		}
	}
}
