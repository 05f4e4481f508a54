// Package testutil starts and watches the C workloads the tests checkpoint. It is for tests
// only: it builds testdata/workloads with gcc, starts processes that the test owns, and ends
// them by PID, never by name.
package testutil

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gocr/gocr/internal/pidinit"
)

var (
	buildMu  sync.Mutex
	buildDir string
	built    = map[string]string{}
)

// Workloads is the directory of the C workloads.
func Workloads() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "workloads")
}

// Build compiles testdata/workloads/NAME.c once per test binary and returns its path.
func Build(t testing.TB, name string) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Fatalf("gcc is needed to build the test workloads: %v", err)
	}
	return build(t, name, func(out string) *exec.Cmd {
		return exec.Command("gcc", "-O1", "-g", "-pthread", "-I", filepath.Join(Workloads(), "include"), "-o", out, filepath.Join(Workloads(), name+".c"))
	})
}

// BuildGo builds the Go program testdata/workloads/NAME once per test binary: a module (it has
// a go.mod) with today's defaults, as users build theirs, or else in GOPATH mode with old ones.
func BuildGo(t testing.TB, name string) string {
	t.Helper()
	return build(t, "go-"+name, func(out string) *exec.Cmd {
		cmd := exec.Command("go", "build", "-o", out, ".")
		cmd.Dir = filepath.Join(Workloads(), name)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if _, err := os.Stat(filepath.Join(cmd.Dir, "go.mod")); err != nil {
			cmd.Env = append(cmd.Env, "GO111MODULE=off")
		}
		return cmd
	})
}

// build runs the command cmd makes to produce the binary key, once per test binary.
func build(t testing.TB, key string, cmd func(out string) *exec.Cmd) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[key]; ok {
		return p
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "gocr-workloads-")
		if err != nil {
			t.Fatal(err)
		}
		buildDir = d
	}
	out := filepath.Join(buildDir, key)
	if b, err := cmd(out).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", key, err, b)
	}
	built[key] = out
	return out
}

// CopyBinary copies a built workload to a directory of the test, so that the test may
// change or remove it.
func CopyBinary(t testing.TB, bin string) string {
	t.Helper()
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(bin)+"-copy")
	if err := os.WriteFile(out, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return out
}

// StartReady starts workload NAME with DIR as its argument and waits for DIR/ready.
func StartReady(t testing.TB, name string, args ...string) (*Proc, string) {
	t.Helper()
	dir := t.TempDir()
	p := Start(t, Build(t, name), append([]string{dir}, args...)...)
	WaitFor(t, name+" to be ready", func() bool { _, err := os.Stat(filepath.Join(dir, "ready")); return err == nil })
	return p, dir
}

// Cleanup removes the built workloads; TestMain calls it.
func Cleanup() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// Proc is a process a test started.
type Proc struct {
	Pid int
	Cmd *exec.Cmd
}

// Start starts bin with args in its own process group; the test kills and reaps it at the end.
func Start(t testing.TB, bin string, args ...string) *Proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	p := &Proc{Pid: cmd.Process.Pid, Cmd: cmd}
	t.Cleanup(func() { p.Kill() })
	return p
}

// Kill kills the process and reaps it if it is our child.
func (p *Proc) Kill() {
	if p.Cmd == nil {
		return
	}
	syscall.Kill(p.Pid, syscall.SIGKILL)
	p.wait()
}

// wait waits for the process through its Cmd; when a dump already reaped it (gocr in the
// test process is its tracer and its parent, so taking its exit reaps it), the Process's
// pidfd is released all the same.
func (p *Proc) wait() error {
	err := p.Cmd.Wait()
	if err != nil && p.Cmd.ProcessState == nil {
		p.Cmd.Process.Release()
	}
	p.Cmd = nil
	return err
}

// Reap waits for a process that was killed by a dump: it is still our child.
func (p *Proc) Reap() error {
	if p.Cmd == nil {
		return nil
	}
	return p.wait()
}

// Adopt registers the cleanup of a process the test did not start itself (a restored root,
// or a restored child reparented to the test, which is a subreaper): kill by PID and reap.
func Adopt(t testing.TB, pid int) {
	t.Cleanup(func() { KillAndReap(pid) })
}

// KillAndReap kills pid and waits for it if it is our child; it gives up after 5 s.
func KillAndReap(pid int) {
	if syscall.Kill(pid, syscall.SIGKILL) != nil {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var ws syscall.WaitStatus
		wpid, err := syscall.Wait4(pid, &ws, syscall.WNOHANG|0x40000000 /* __WALL */, nil)
		if err != nil || wpid == pid {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// SetSubreaper makes the test process the reaper of orphans it started: restored processes
// whose gocr parent went away come back to it, and PID 1 here reaps only every few seconds.
func SetSubreaper() error {
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, 36 /* PR_SET_CHILD_SUBREAPER */, 1, 0); e != 0 {
		return e
	}
	return nil
}

// ReapOrphans reaps every exited child, without waiting.
func ReapOrphans() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG|0x40000000, nil)
		if err != nil || pid <= 0 {
			return
		}
	}
}

// WaitFor polls cond every 5 ms until it holds or 10 s pass.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WaitForProcs is WaitFor that, on timeout, also says what the processes were doing (state,
// kernel wait channel, syscall, signal masks), so that a rare hang can be read from the log.
func WaitForProcs(t testing.TB, what string, cond func() bool, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s\n%s", what, Describe(pids...))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Describe tells what each process is doing, for a failure message.
func Describe(pids ...int) string {
	var b strings.Builder
	for _, pid := range pids {
		stat := ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		fmt.Fprintf(&b, "pid %d: %s", pid, stat)
		fmt.Fprintf(&b, "  wchan %s, syscall %s", ReadFile(fmt.Sprintf("/proc/%d/wchan", pid)), ReadFile(fmt.Sprintf("/proc/%d/syscall", pid)))
		for _, l := range Lines(fmt.Sprintf("/proc/%d/status", pid)) {
			if strings.HasPrefix(l, "Sig") || strings.HasPrefix(l, "ShdPnd") {
				fmt.Fprintf(&b, "  %s\n", l)
			}
		}
	}
	return b.String()
}

// ReadFile reads a file, empty if it does not exist yet.
func ReadFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// Lines returns the complete lines of a file.
func Lines(path string) []string {
	s := ReadFile(path)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	} else {
		return nil
	}
	return strings.Split(s, "\n")
}

// ProcState returns the State letter and TracerPid of pid from /proc, or "" if it is gone.
func ProcState(pid int) (state string, tracer int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", 0
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) >= 2 && f[0] == "State:" {
			state = f[1]
		}
		if len(f) >= 2 && f[0] == "TracerPid:" {
			tracer, _ = strconv.Atoi(f[1])
		}
	}
	return state, tracer
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	s, _ := ProcState(pid)
	return s != "" && s != "Z" && s != "X"
}

// Stat returns ppid, pgid and sid of pid.
func Stat(pid int) (ppid, pgid, sid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ppid, _ = strconv.Atoi(f[1])
	pgid, _ = strconv.Atoi(f[2])
	sid, _ = strconv.Atoi(f[3])
	return ppid, pgid, sid, nil
}

// Children lists the children of pid, forked by any of its threads.
func Children(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, w := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(w)
			out = append(out, n)
		}
	}
	return out
}

// RequireRoot skips when not root: ptrace of other processes and clone3 with set_tid need it.
func RequireRoot(t testing.TB) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: ptrace and clone3 with set_tid (CAP_SYS_ADMIN, CAP_SYS_PTRACE)")
	}
}

// BuildPlugin builds a plugin of the module (a main package at path, relative to the module
// root) as gocr-plugin-NAME in a directory of its own, and returns that directory.
func BuildPlugin(t testing.TB, path, name string) string {
	t.Helper()
	bin := build(t, "gocr-plugin-"+name, func(out string) *exec.Cmd {
		cmd := exec.Command("go", "build", "-o", out, "./"+path)
		cmd.Dir = filepath.Join(Workloads(), "..", "..")
		return cmd
	})
	return filepath.Dir(bin)
}

// Main runs a package's tests as the subreaper of every process they start (restored
// processes are children of the test binary, and their orphans come back to it), then reaps
// what is left and removes the built workloads. A TestMain calls it and nothing else.
func Main(m *testing.M) {
	pidinit.RunIfInit() // the test binary is the stub of in-process restores
	if err := SetSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, "set child subreaper:", err)
		os.Exit(1)
	}
	before := openFds()
	code := m.Run()
	ReapOrphans()
	Cleanup()
	// What a goroutine still closes (go-plugin reaps a killed plugin in its own) gets a second.
	leaked := leakedFds(before, openFds())
	for i := 0; i < 20 && len(leaked) > 0; i++ {
		time.Sleep(50 * time.Millisecond)
		leaked = leakedFds(before, openFds())
	}
	if len(leaked) > 0 && code == 0 {
		fmt.Fprintf(os.Stderr, "the tests leaked %d fds: %s\n", len(leaked), strings.Join(leaked, ", "))
		code = 1
	}
	os.Exit(code)
}

// openFds lists this process's open fds, "N -> target".
func openFds() map[string]string {
	out := map[string]string{}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			out[e.Name()] = l
		}
	}
	return out
}

// leakedFds lists the fds open now that were not before the tests, but for the Go runtime's
// own (its netpoller's epoll instance and the eventfd or pipe that wakes it, made on first use).
func leakedFds(before, after map[string]string) []string {
	runtime := map[string]int{"anon_inode:[eventpoll]": 1, "anon_inode:[eventfd]": 1, "pipe": 2}
	var out []string
	for fd, l := range after {
		if before[fd] == l {
			continue
		}
		kind := l
		if strings.HasPrefix(l, "pipe:") {
			kind = "pipe"
		}
		if runtime[kind] > 0 {
			runtime[kind]--
			continue
		}
		if l == "anon_inode:[pidfd]" {
			if info, err := os.ReadFile("/proc/self/fdinfo/" + fd); err == nil {
				for _, line := range strings.Split(string(info), "\n") {
					if strings.HasPrefix(line, "Pid:") {
						l += " (" + strings.TrimSpace(line) + ")"
					}
				}
			}
		}
		out = append(out, fd+" -> "+l)
	}
	sort.Strings(out)
	return out
}

// LastCount returns the first number of the last line of a counter's log, 0 if none yet.
func LastCount(path string) int {
	lines := Lines(path)
	if len(lines) == 0 {
		return 0
	}
	f := strings.Fields(lines[len(lines)-1])
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}
