package tracer_test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/tracer"
	"github.com/gocr/gocr/internal/testutil"
)

func TestMain(m *testing.M) {
	if pid := os.Getenv("GOCR_TRACER_HELPER"); pid != "" {
		n, _ := strconv.Atoi(pid)
		if err := injectAndHang(n, os.Getenv("GOCR_TRACER_SAFE")); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	testutil.Main(m)
}

// injectAndHang seizes pid, maps a scratch area in it and arms the safe return (safe:
// "scratch", in the scratch area; "stack", on the thread's stack with its own gadgets); then
// it runs an injected nanosleep of 2 s inside it, and says "ready" just before: the test
// kills this process in the middle of the call.
func injectAndHang(pid int, safe string) error {
	runtime.LockOSThread()
	t, err := tracer.Seize(pid, false)
	if err != nil {
		return err
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return err
	}
	var exec [][2]uint64
	for _, l := range strings.Split(string(maps), "\n") {
		var start, end uint64
		fmt.Sscanf(l, "%x-%x", &start, &end)
		if strings.HasSuffix(l, "[vdso]") {
			if err := t.FindSyscallInsn(start, end); err != nil {
				return err
			}
		} else if f := strings.Fields(l); len(f) >= 6 && strings.Contains(f[1], "x") && strings.HasPrefix(f[5], "/") {
			exec = append(exec, [2]uint64{start, end})
		}
	}
	xstate, err := linux.GetXState(pid)
	if err != nil {
		return err
	}
	size := uint64(2*linux.PageSize + linux.SigframeSize(len(xstate)))
	size = (size + linux.PageSize - 1) &^ (linux.PageSize - 1)
	scratch, err := t.Syscall(linux.SysMmap, 0, size, linux.ProtRead|linux.ProtWrite|linux.ProtExec, linux.MapPrivate|linux.MapAnonymous, ^uint64(0), 0)
	if err != nil {
		return err
	}
	if safe == "stack" {
		g, ok := t.FindGadgets(exec)
		if !ok {
			return fmt.Errorf("no gadgets in %v", exec)
		}
		if err := t.ArmOnStack(g, xstate); err != nil {
			return err
		}
	}
	if safe == "scratch" {
		if err := t.WriteMem(scratch+linux.PageSize, linux.SafeReturnCode); err != nil {
			return err
		}
		if err := t.ArmSafeReturn(scratch+linux.PageSize, scratch+2*linux.PageSize, scratch, xstate); err != nil {
			return err
		}
	}
	ts := make([]byte, 16)
	binary.LittleEndian.PutUint64(ts, 2)
	if err := t.WriteMem(scratch, ts); err != nil {
		return err
	}
	fmt.Println("ready")
	_, err = t.Syscall(linux.SysNanosleep, scratch, 0)
	return err
}

// A tracer killed in the middle of an injected syscall run from the safe return (in a scratch
// area, or on the thread's stack through the process's own gadgets) leaves the thread to
// finish the call and rt_sigreturn to itself: the counter it was goes on counting with its own
// memory, signal mask and file, untraced.
func TestTracerKilledInTheMiddleOfACall(t *testing.T) {
	for _, mode := range []string{"scratch", "stack"} {
		t.Run(mode, func(t *testing.T) { killedInCall(t, mode) })
	}
}

func killedInCall(t *testing.T, mode string) {
	testutil.RequireRoot(t)
	log := t.TempDir() + "/count.log"
	p := testutil.Start(t, testutil.Build(t, "counter"), log)
	testutil.WaitFor(t, "the counter to count", func() bool { return testutil.LastCount(log) >= 3 })
	before := status(t, p.Pid)

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := exec.Command(exe, "-test.run", "XXX")
	helper.Env = append(os.Environ(), "GOCR_TRACER_HELPER="+strconv.Itoa(p.Pid), "GOCR_TRACER_SAFE="+mode)
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		helper.Process.Kill()
		helper.Wait()
		t.Fatalf("helper: %s", line)
	}
	time.Sleep(200 * time.Millisecond) // in the nanosleep now
	if st, tracer := testutil.ProcState(p.Pid); tracer != helper.Process.Pid {
		t.Fatalf("the counter is %s, traced by %d, not by the helper", st, tracer)
	}
	at := testutil.LastCount(log)
	helper.Process.Kill()
	helper.Wait()

	// The call ends after its 2 s, and the counter is itself again.
	testutil.WaitForProcs(t, "the counter to go on after the call", func() bool { return testutil.LastCount(log) >= at+20 }, p.Pid)
	for i, l := range testutil.Lines(log) {
		if l != fmt.Sprintf("%d %d", i+1, i+1) {
			t.Fatalf("log line %d is %q: the counter's state changed", i+1, l)
		}
	}
	after := status(t, p.Pid)
	for _, k := range []string{"SigBlk", "Cpus_allowed_list", "TracerPid"} {
		if before[k] != after[k] {
			t.Errorf("%s is %q after the tracer died, %q before", k, after[k], before[k])
		}
	}
}

func status(t *testing.T, pid int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, l := range strings.Split(testutil.ReadFile(fmt.Sprintf("/proc/%d/status", pid)), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}
