package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/internal/testutil"
)

var gocrBin string

func TestMain(m *testing.M) {
	// In a testscript (testdata/script), "gocr" runs this binary as the CLI, and "criu" as
	// the CLI named criu.
	os.Exit(testscript.RunMain(setup{m}, map[string]func() int{
		"gocr": Main,
		"criu": func() int { os.Args[0] = "criu"; return Main() },
	}))
}

// setup builds the gocr binary the other tests run, around the tests.
type setup struct{ m *testing.M }

func (s setup) Run() int {
	if err := testutil.SetSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "gocr-cli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	gocrBin = filepath.Join(dir, "gocr")
	if out, err := exec.Command("go", "build", "-o", gocrBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build gocr: %v\n%s", err, out)
		return 1
	}
	code := s.m.Run()
	testutil.ReapOrphans()
	testutil.Cleanup()
	os.RemoveAll(dir)
	return code
}

// gocr runs the CLI and returns stdout, stderr and the exit code.
func gocr(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(gocrBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func lastCount(path string) int { return testutil.LastCount(path) }

// A session as a user would type it: dump, show, restore -d, the counter goes on.
func TestCLISession(t *testing.T) {
	testutil.RequireRoot(t)
	log := filepath.Join(t.TempDir(), "count.log")
	p := testutil.Start(t, testutil.Build(t, "counter"), log)
	testutil.WaitFor(t, "counter", func() bool { return lastCount(log) >= 3 })
	img := filepath.Join(t.TempDir(), "img")

	out, errOut, code := gocr(t, "dump", "-t", strconv.Itoa(p.Pid), "-D", img)
	if code != 0 || !strings.Contains(out, "dumped 1 process") {
		t.Fatalf("dump: exit %d\n%s%s", code, out, errOut)
	}
	p.Reap()
	at := lastCount(log)

	out, _, code = gocr(t, "show", img)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("process %d (counter)", p.Pid)) || !strings.Contains(out, "[heap]") || !strings.Contains(out, log) {
		t.Fatalf("show: exit %d\n%s", code, out)
	}
	out, _, code = gocr(t, "show", "--json", img)
	var js struct {
		Processes []struct {
			Pid  int `json:"pid"`
			Vmas []struct {
				Kind string `json:"kind"`
			} `json:"vmas"`
		} `json:"processes"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &js) != nil || len(js.Processes) != 1 || js.Processes[0].Pid != p.Pid || len(js.Processes[0].Vmas) == 0 {
		t.Fatalf("show --json: exit %d\n%.400s", code, out)
	}

	pidfile := filepath.Join(t.TempDir(), "root.pid")
	out, errOut, code = gocr(t, "restore", "-d", "--pidfile", pidfile, "-D", img)
	if code != 0 {
		t.Fatalf("restore: exit %d\n%s%s", code, out, errOut)
	}
	testutil.Adopt(t, p.Pid) // reparented to us when gocr exited
	if got := testutil.ReadFile(pidfile); got != fmt.Sprintf("%d\n", p.Pid) {
		t.Errorf("pid file holds %q, want %d", got, p.Pid)
	}
	testutil.WaitFor(t, "the restored counter", func() bool { return lastCount(log) >= at+10 })
	for i, l := range testutil.Lines(log) {
		if l != fmt.Sprintf("%d %d", i+1, i+1) {
			t.Fatalf("log line %d is %q", i+1, l)
		}
	}
}

// Without -d, restore waits for the root and exits with its status.
func TestCLIRestoreWaits(t *testing.T) {
	testutil.RequireRoot(t)
	log := filepath.Join(t.TempDir(), "count.log")
	p := testutil.Start(t, testutil.Build(t, "counter"), log)
	testutil.WaitFor(t, "counter", func() bool { return lastCount(log) >= 3 })
	img := filepath.Join(t.TempDir(), "img")
	if _, e, code := gocr(t, "dump", "-t", strconv.Itoa(p.Pid), "-D", img); code != 0 {
		t.Fatal(e)
	}
	p.Reap()
	at := lastCount(log)
	cmd := exec.Command(gocrBin, "restore", "-D", img)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the restored counter", func() bool { return lastCount(log) > at })
	testutil.KillAndReap(p.Pid) // not our child: gocr reaps it and exits
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 128+9 {
		t.Fatalf("gocr restore exited with %v, want status 137 (root killed by SIGKILL)\n%s", err, errb.String())
	}
}

func TestCLIErrors(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"dump", "-D", dir + "/x"}, 2, "-t PID"},
		{[]string{"dump", "-t", "1"}, 2, "-D DIR"},
		{[]string{"dump", "--bogus"}, 2, "unknown flag"},
		{[]string{"dump", "-t", "1", "-D", dir + "/g", "--ghost-limit", "12Q"}, 2, "--ghost-limit"},
		{[]string{"dump", "-t", "4194000", "-D", dir + "/y"}, 3, "no such process"},
		{[]string{"restore", "-D", dir + "/none"}, 6, "no image"},
		{[]string{"show", dir}, 6, "no index.img"},
		{[]string{"resume", "-t", "4194000"}, 3, "no such process"},
	} {
		_, errOut, code := gocr(t, c.args...)
		if code != c.code || !strings.Contains(errOut, c.msg) {
			t.Errorf("gocr %v: exit %d, %q; want exit %d mentioning %q", c.args, code, errOut, c.code, c.msg)
		}
	}
}

// gocr check, dump --check-only and check mode as a user would run them.
func TestCLICheck(t *testing.T) {
	testutil.RequireRoot(t)
	out, _, code := gocr(t, "check")
	if code != 0 || !strings.Contains(out, "yes  PAGEMAP_SCAN") {
		t.Fatalf("gocr check: exit %d\n%s", code, out)
	}
	log := filepath.Join(t.TempDir(), "count.log")
	p := testutil.Start(t, testutil.Build(t, "counter"), log)
	testutil.WaitFor(t, "counter", func() bool { return lastCount(log) >= 3 })
	img := filepath.Join(t.TempDir(), "img")
	if out, e, code := gocr(t, "dump", "--check-only", "-t", strconv.Itoa(p.Pid), "-D", img); code != 0 || !strings.Contains(out, "goes on running") {
		t.Fatalf("dump --check-only: exit %d\n%s%s", code, out, e)
	}
	// The process still runs, so its PID is taken: check mode says so, with exit code 8.
	out, _, code = gocr(t, "restore", "-D", img)
	if code != 8 || !strings.Contains(out, fmt.Sprintf("pid %d: %d is in use by \"counter\"", p.Pid, p.Pid)) || !strings.Contains(out, "would fail") {
		t.Fatalf("check mode with the pid in use: exit %d\n%s", code, out)
	}
	p.Kill()
	out, _, code = gocr(t, "restore", "--json", "-D", img)
	var rep struct {
		OK bool `json:"ok"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || !rep.OK {
		t.Fatalf("check mode: exit %d\n%s", code, out)
	}
	if testutil.Alive(p.Pid) {
		t.Fatal("check mode created a process")
	}
}

// A plugin as a user runs it: --plugin for the dump, the restore finds it by itself (here
// through --plugin-dir); without it, the restore fails naming it.
func TestCLIPlugin(t *testing.T) {
	pluginDir, log, p := claimedCounter(t)
	img := filepath.Join(t.TempDir(), "img")
	if out, e, code := gocr(t, "--plugin", "example", "--plugin-dir", pluginDir, "dump", "-t", strconv.Itoa(p.Pid), "-D", img); code != 0 {
		t.Fatalf("dump: exit %d\n%s%s", code, out, e)
	}
	p.Reap()
	at := lastCount(log)
	if out, _, _ := gocr(t, "show", img); !strings.Contains(out, "plugin ") || !strings.Contains(out, log) {
		t.Fatalf("show does not list the plugin's file:\n%s", out)
	}
	if _, e, code := gocr(t, "restore", "-d", "-D", img); code != 7 || !strings.Contains(e, "example") {
		t.Fatalf("restore without the plugin: exit %d, %s", code, e)
	}
	if out, e, code := gocr(t, "--plugin-dir", pluginDir, "restore", "-d", "-D", img); code != 0 {
		t.Fatalf("restore: exit %d\n%s%s", code, out, e)
	}
	testutil.Adopt(t, p.Pid)
	testutil.WaitFor(t, "the counter to go on", func() bool { return lastCount(log) >= at+10 })
}

// Ctrl-C (SIGINT) in the middle of a dump: gocr exits with 130, the tree goes on running, no
// image is left, and no plugin process either. The dump is held in a plugin call that never
// returns, so the signal always comes in the middle.
func TestCLIInterruptedDump(t *testing.T) {
	pluginDir, log, p := claimedCounter(t)
	t.Setenv("GOCR_EXAMPLE_HANG", "dump") // read by the plugin process gocr starts
	img := filepath.Join(t.TempDir(), "img")
	cmd := exec.Command(gocrBin, "--plugin", "example", "--plugin-dir", pluginDir, "dump", "-t", strconv.Itoa(p.Pid), "-D", img)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the tree is frozen, then interrupt.
	testutil.WaitFor(t, "the dump to freeze the tree", func() bool { _, tracer := testutil.ProcState(p.Pid); return tracer != 0 })
	time.Sleep(100 * time.Millisecond)
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
		t.Fatalf("gocr exited with %v, want 130\n%s", err, errb.String())
	}
	if _, err := os.Stat(img); !os.IsNotExist(err) {
		t.Errorf("an interrupted dump left %s", img)
	}
	if s, tr := testutil.ProcState(p.Pid); s == "T" || s == "t" || tr != 0 {
		t.Fatalf("after the interrupted dump the process is %q, traced by %d", s, tr)
	}
	at := lastCount(log)
	testutil.WaitFor(t, "the counter to go on", func() bool { return lastCount(log) >= at+3 })
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if exe, _ := os.Readlink("/proc/" + e.Name() + "/exe"); exe == filepath.Join(pluginDir, "gocr-plugin-example") {
			t.Errorf("plugin process %s left behind", e.Name())
		}
	}
}

// Ctrl-C in the middle of a restore: gocr exits with 130 and leaves no process behind. The
// restore is held in a plugin call that never returns.
func TestCLIInterruptedRestore(t *testing.T) {
	pluginDir, _, p := claimedCounter(t)
	img := filepath.Join(t.TempDir(), "img")
	if out, e, code := gocr(t, "--plugin", "example", "--plugin-dir", pluginDir, "dump", "-t", strconv.Itoa(p.Pid), "-D", img); code != 0 {
		t.Fatalf("dump: exit %d\n%s%s", code, out, e)
	}
	p.Reap()
	t.Setenv("GOCR_EXAMPLE_HANG", "restore")
	cmd := exec.Command(gocrBin, "--plugin-dir", pluginDir, "restore", "-d", "-D", img)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the restore is in the plugin's RestoreFile by now
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
		t.Fatalf("gocr exited with %v, want 130\n%s", err, errb.String())
	}
	testutil.ReapOrphans()
	if s, _ := testutil.ProcState(p.Pid); s != "" {
		t.Fatalf("an interrupted restore left pid %d in state %s", p.Pid, s)
	}
}

// claimedCounter builds the example plugin and starts a counter whose log is a file the
// plugin claims. It returns the plugin's directory, the log and the counter.
func claimedCounter(t *testing.T) (string, string, *testutil.Proc) {
	t.Helper()
	testutil.RequireRoot(t)
	pluginDir := testutil.BuildPlugin(t, "sdk/example/gocr-plugin-example", "example")
	claimed := filepath.Join(t.TempDir(), "claimed")
	os.Mkdir(claimed, 0o755)
	t.Setenv("GOCR_EXAMPLE_PREFIX", claimed+"/")
	log := filepath.Join(claimed, "count.log")
	p := testutil.Start(t, testutil.Build(t, "counter"), log)
	testutil.WaitFor(t, "counter", func() bool { return lastCount(log) >= 3 })
	return pluginDir, log, p
}

// Pre-dump, then a final dump against it, then a restore, as a user types them.
func TestCLIPreDump(t *testing.T) {
	testutil.RequireRoot(t)
	log := filepath.Join(t.TempDir(), "count.log")
	p := testutil.Start(t, testutil.Build(t, "counter"), log)
	testutil.WaitFor(t, "counter", func() bool { return lastCount(log) >= 3 })
	base := t.TempDir()
	if out, e, code := gocr(t, "pre-dump", "-t", strconv.Itoa(p.Pid), "-D", filepath.Join(base, "1")); code != 0 {
		t.Fatalf("pre-dump: exit %d\n%s%s", code, out, e)
	}
	if !testutil.Alive(p.Pid) {
		t.Fatal("pre-dump stopped the process")
	}
	if out, e, code := gocr(t, "dump", "-t", strconv.Itoa(p.Pid), "-D", filepath.Join(base, "2"), "--prev-images-dir", "../1"); code != 0 {
		t.Fatalf("dump against the pre-dump: exit %d\n%s%s", code, out, e)
	}
	p.Reap()
	at := lastCount(log)
	out, _, code := gocr(t, "show", filepath.Join(base, "2"))
	if code != 0 || !strings.Contains(out, "parent image: ../1") || !strings.Contains(out, "more in the parent image") {
		t.Fatalf("show of the incremental image: exit %d\n%s", code, out)
	}
	if out, e, code := gocr(t, "restore", "-d", "-D", filepath.Join(base, "2")); code != 0 {
		t.Fatalf("restore: exit %d\n%s%s", code, out, e)
	}
	testutil.Adopt(t, p.Pid)
	testutil.WaitFor(t, "the restored counter", func() bool { return lastCount(log) >= at+10 })
	if _, e, code := gocr(t, "dump", "-t", "1", "-D", filepath.Join(base, "3"), "--track-mem"); code != 2 || !strings.Contains(e, "--leave-running") {
		t.Errorf("--track-mem on a killing dump: exit %d, %s", code, e)
	}
}

// In a container, /proc shows a pgid and sid of 0 for a group or session whose leader lives
// outside the container's PID namespace. Such a tree dumps and restores there; its group and
// session are inherited from the restoring gocr. The whole run happens in a new PID namespace,
// which ends (killing what is left in it) when the script does.
func TestCLIInPIDNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) is not installed")
	}
	dir := t.TempDir()
	script := `
set -e
"$COUNTER" "$LOG" & pid=$!
while [ "$(cat "$LOG" 2>/dev/null | wc -l)" -lt 3 ]; do sleep 0.01; done
echo "stat: $(cut -d' ' -f5,6 /proc/$pid/stat)"
"$GOCR" dump -t $pid -D "$IMG"
wait $pid || true
at=$(wc -l < "$LOG")
"$GOCR" restore -d -D "$IMG"
for i in $(seq 500); do [ "$(wc -l < "$LOG")" -ge $((at + 10)) ] && break; sleep 0.01; done
echo "counted: $at then $(wc -l < "$LOG") in $(cat /proc/$pid/comm)"
kill -9 $pid
`
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc", "bash", "-c", script)
	log := filepath.Join(dir, "count.log")
	cmd.Env = append(os.Environ(), "COUNTER="+testutil.Build(t, "counter"), "LOG="+log, "GOCR="+gocrBin, "IMG="+filepath.Join(dir, "img"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(string(out), "stat: 0 0") {
		t.Fatalf("the counter's pgid and sid were not 0 in the new namespace:\n%s", out)
	}
	var at, now int
	var comm string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "counted:") {
			fmt.Sscanf(l, "counted: %d then %d in %s", &at, &now, &comm)
		}
	}
	if comm != "counter" || now < at+10 {
		t.Fatalf("the restored counter did not go on:\n%s", out)
	}
	for i, l := range testutil.Lines(log) {
		if l != fmt.Sprintf("%d %d", i+1, i+1) {
			t.Fatalf("log line %d is %q", i+1, l)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "1K": 1 << 10, "64M": 64 << 20, "2g": 2 << 30, "0": 0} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"M", "-1", "1.5G", "x"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) took it", in)
		}
	}
}

// Action scripts run at each stage with CRIU's variables; one that fails before the dump
// leaves the tree untouched, one that fails after the restore undoes it.
func TestCLIActionScripts(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	record := filepath.Join(dir, "actions.log")
	script := func(name, failAt string) string {
		p := filepath.Join(dir, name)
		body := fmt.Sprintf("#!/bin/sh\necho \"$CRTOOLS_SCRIPT_ACTION $CRTOOLS_INIT_PID\" >> %s\n[ \"$CRTOOLS_SCRIPT_ACTION\" != %q ]\n", record, failAt)
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok, failDump, failRestore := script("ok.sh", "none"), script("fail-dump.sh", "pre-dump"), script("fail-restore.sh", "post-restore")
	log := filepath.Join(dir, "count.log")
	p := testutil.Start(t, testutil.Build(t, "counter"), log)
	testutil.WaitFor(t, "counter", func() bool { return lastCount(log) >= 3 })
	pid := strconv.Itoa(p.Pid)

	if _, e, code := gocr(t, "--action-script", failDump, "dump", "-t", pid, "-D", filepath.Join(dir, "no")); code == 0 || !strings.Contains(e, "pre-dump") {
		t.Fatalf("dump with a failing pre-dump script: exit %d, %s", code, e)
	}
	at := lastCount(log)
	testutil.WaitFor(t, "the counter to go on", func() bool { return lastCount(log) > at })

	img := filepath.Join(dir, "img")
	if _, e, code := gocr(t, "--action-script", ok, "dump", "-t", pid, "-D", img); code != 0 {
		t.Fatalf("dump: exit %d, %s", code, e)
	}
	p.Reap()
	if _, e, code := gocr(t, "--action-script", failRestore, "restore", "-d", "-D", img); code == 0 || !strings.Contains(e, "post-restore") {
		t.Fatalf("restore with a failing post-restore script: exit %d, %s", code, e)
	}
	if testutil.Alive(p.Pid) {
		t.Fatal("a restore undone by its script left the process")
	}
	if _, e, code := gocr(t, "--action-script", ok, "restore", "-d", "-D", img); code != 0 {
		t.Fatalf("restore: exit %d, %s", code, e)
	}
	testutil.Adopt(t, p.Pid)
	want := []string{"pre-dump " + pid, "pre-dump " + pid, "post-dump " + pid, "pre-restore " + pid, "post-restore " + pid,
		"pre-restore " + pid, "post-restore " + pid, "pre-resume " + pid, "post-resume " + pid}
	if got := testutil.Lines(record); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("stages run:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A restore whose pid is taken fails and suggests --new-pidns; with it, the tree runs beside
// the original in a pid namespace of its own, gocr waits for its init, and killing the init
// (SIGTERM, passed on to the root) ends the copy and gocr with status 143.
func TestCLINewPidns(t *testing.T) {
	testutil.RequireRoot(t)
	log := filepath.Join(t.TempDir(), "count.log")
	p := testutil.Start(t, testutil.Build(t, "counter"), log)
	testutil.WaitFor(t, "counter", func() bool { return lastCount(log) >= 3 })
	img := filepath.Join(t.TempDir(), "img")
	if _, e, code := gocr(t, "dump", "-R", "-t", strconv.Itoa(p.Pid), "-D", img); code != 0 {
		t.Fatal(e)
	}
	if _, e, code := gocr(t, "restore", "-D", img); code == 0 || !strings.Contains(e, "--new-pidns") {
		t.Fatalf("restore with the pid taken: exit %d, %q; want a failure suggesting --new-pidns", code, e)
	}
	pidfile := filepath.Join(t.TempDir(), "pid")
	cmd := exec.Command(gocrBin, "restore", "--new-pidns", "--pidfile", pidfile, "-D", img)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the pid file", func() bool { return strings.TrimSpace(testutil.ReadFile(pidfile)) != "" })
	init, _ := strconv.Atoi(strings.TrimSpace(testutil.ReadFile(pidfile)))
	testutil.Adopt(t, init)
	var copy int
	testutil.WaitFor(t, "the copy under its init", func() bool {
		kids := testutil.Children(init)
		if len(kids) == 1 {
			copy = kids[0]
		}
		return copy != 0
	})
	ns := ""
	for _, l := range strings.Split(testutil.ReadFile(fmt.Sprintf("/proc/%d/status", copy)), "\n") {
		if v, ok := strings.CutPrefix(l, "NSpid:"); ok {
			ns = strings.Join(strings.Fields(v), " ")
		}
	}
	if want := fmt.Sprintf("%d %d", copy, p.Pid); ns != want {
		t.Fatalf("the copy's NSpid is %q, want %q (the original's pid inside)", ns, want)
	}
	if !testutil.Alive(p.Pid) {
		t.Fatal("the original died")
	}
	syscall.Kill(init, syscall.SIGTERM) // passed on to the root; the namespace ends with it
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 128+15 {
		t.Fatalf("gocr restore --new-pidns exited with %v, want status 143\n%s", err, errb.String())
	}
}

// The CLI's usage, its refusals of bad command lines and their exit codes, as a user types
// them (testdata/script/*.txtar: no root needed, nothing traced).
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{Dir: "testdata/script"})
}

// Memory tracking and apply as a user types them: reset, see what was written, dump only
// that, and roll the process back to an image of itself.
func TestCLITrackAndApply(t *testing.T) {
	testutil.RequireRoot(t)
	for _, f := range core.Features() {
		if strings.HasPrefix(f.Name, "userfaultfd write-protect") && !f.Present {
			t.Skipf("no %s here: %s", f.Name, f.Detail)
		}
	}
	p, dir := testutil.StartReady(t, "trackpages")
	pid := strconv.Itoa(p.Pid)
	command := func(cmd, done string) {
		t.Helper()
		os.WriteFile(filepath.Join(dir, "cmd"), []byte(cmd+"\n"), 0o644)
		syscall.Kill(p.Pid, syscall.SIGUSR2)
		testutil.WaitFor(t, cmd, func() bool { _, err := os.Stat(filepath.Join(dir, done)); return err == nil })
	}
	base := filepath.Join(t.TempDir(), "base")
	if out, e, code := gocr(t, "dump", "-t", pid, "-D", base, "-R"); code != 0 {
		t.Fatalf("dump: exit %d\n%s%s", code, out, e)
	}
	if out, e, code := gocr(t, "track", "-t", pid); code != 0 || !strings.Contains(out, "reset the memory tracking of 1 process") {
		t.Fatalf("track: exit %d\n%s%s", code, out, e)
	}
	command("write 2 10 11 12 700", "done-2")
	out, e, code := gocr(t, "track", "-t", pid, "--show")
	if code != 0 || !regexp.MustCompile(`(?m)^ +[0-9a-f]+-[0-9a-f]+ +3$`).MatchString(out) || !regexp.MustCompile(`(?m)^ +[0-9a-f]+-[0-9a-f]+ +1$`).MatchString(out) {
		t.Fatalf("track --show: exit %d, want the runs of pages 10-12 and 700\n%s%s", code, out, e)
	}
	delta := filepath.Join(t.TempDir(), "delta")
	if _, e, code := gocr(t, "dump", "-t", pid, "-D", delta, "--tracked"); code != 2 || !strings.Contains(e, "--leave-running") {
		t.Fatalf("dump --tracked that would kill the tree: exit %d, %s", code, e)
	}
	if out, e, code := gocr(t, "dump", "-t", pid, "-D", delta, "--tracked", "-R"); code != 0 {
		t.Fatalf("dump --tracked: exit %d\n%s%s", code, out, e)
	}
	if _, e, code := gocr(t, "restore", "-D", delta); code != 2 || !strings.Contains(e, "gocr apply") {
		t.Fatalf("restore of a tracked image: exit %d, %s", code, e)
	}
	if out, e, code := gocr(t, "apply", "-t", pid, "-D", base); code != 0 || !strings.Contains(out, "applied") {
		t.Fatalf("apply: exit %d\n%s%s", code, out, e)
	}
	syscall.Kill(p.Pid, syscall.SIGUSR1)
	report := filepath.Join(dir, "report")
	testutil.WaitFor(t, "a report", func() bool { return len(testutil.Lines(report)) >= 1 })
	if got := testutil.Lines(report)[0]; got != "ok 1" {
		t.Fatalf("after apply, the process says %q, want \"ok 1\" (its memory as at the dump)", got)
	}
	command("map", "done-map")
	if _, e, code := gocr(t, "apply", "-t", pid, "-D", base); code != 7 || !strings.Contains(e, "no longer matches the image: mapping") {
		t.Fatalf("apply onto a changed address space: exit %d, %s", code, e)
	}
}

// restore --lazy-pages -d: the tree runs at once, and gocr returns once every page is in.
func TestCLILazyPages(t *testing.T) {
	testutil.RequireRoot(t)
	log := filepath.Join(t.TempDir(), "count.log")
	p := testutil.Start(t, testutil.Build(t, "counter"), log)
	testutil.WaitFor(t, "counter", func() bool { return lastCount(log) >= 3 })
	img := filepath.Join(t.TempDir(), "img")
	if out, e, code := gocr(t, "dump", "-t", strconv.Itoa(p.Pid), "-D", img); code != 0 {
		t.Fatalf("dump: exit %d\n%s%s", code, out, e)
	}
	p.Reap()
	at := lastCount(log)
	if _, e, code := gocr(t, "restore", "-D", img, "--lazy-pages", "--exec-cmd", "--", "true"); code != 2 || !strings.Contains(e, "--exec-cmd") {
		t.Fatalf("--lazy-pages with --exec-cmd: exit %d, %s", code, e)
	}
	out, e, code := gocr(t, "restore", "-d", "-D", img, "--lazy-pages")
	if code != 0 || !strings.Contains(out, "every page is in") {
		t.Fatalf("restore --lazy-pages -d: exit %d\n%s%s", code, out, e)
	}
	testutil.Adopt(t, p.Pid)
	testutil.WaitFor(t, "the restored counter", func() bool { return lastCount(log) >= at+10 })
}

// The progress line gives bytes, rate and time left; it is drawn only on a terminal.
func TestProgressLine(t *testing.T) {
	var b bytes.Buffer
	clock := time.Unix(1000, 0)
	p := &progress{w: &b, tty: true, what: "dump", now: func() time.Time { return clock }}
	p.update(core.Progress{Stage: "memory", Done: 0, Total: 1 << 30})
	clock = clock.Add(time.Second)
	p.update(core.Progress{Stage: "memory", Done: 256 << 20, Total: 1 << 30})
	if got := b.String(); !strings.Contains(got, "dump: memory 256.0 MiB / 1.00 GiB (25%, 268 MB/s, 3s left)") {
		t.Fatalf("progress line: %q", got)
	}
	var quiet bytes.Buffer
	q := newProgress(&quiet, "dump", false) // not a terminal
	q.update(core.Progress{Stage: "memory", Done: 1, Total: 2})
	if quiet.Len() != 0 {
		t.Fatalf("progress drawn where there is no terminal: %q", quiet.String())
	}
}

// A dump sent to a page server as a user types it: the server refuses to start without a
// token, receives the image, and the restore from it works.
func TestCLIPageServer(t *testing.T) {
	testutil.RequireRoot(t)
	tmp := t.TempDir()
	token := filepath.Join(tmp, "token")
	os.WriteFile(token, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	dst := filepath.Join(tmp, "dst")
	if _, e, code := gocr(t, "page-server", "--port", "27123", "-D", dst); code != 2 || !strings.Contains(e, "--auth-token-file") {
		t.Fatalf("page-server without a token: exit %d, %s", code, e)
	}
	srv := exec.Command(gocrBin, "page-server", "--address", "127.0.0.1", "--port", "0", "-D", dst, "--auth-token-file", token)
	stderr, _ := srv.StderrPipe()
	var out bytes.Buffer
	srv.Stdout = &out
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	line := make([]byte, 256)
	n, _ := stderr.Read(line)
	addr := regexp.MustCompile(`listening on (\S+)`).FindSubmatch(line[:n])
	if addr == nil {
		t.Fatalf("page-server says %q", line[:n])
	}
	log := filepath.Join(tmp, "count.log")
	p := testutil.Start(t, testutil.Build(t, "counter"), log)
	testutil.WaitFor(t, "counter", func() bool { return lastCount(log) >= 3 })
	if o, e, code := gocr(t, "dump", "-t", strconv.Itoa(p.Pid), "--page-server", string(addr[1]), "--auth-token-file", token); code != 0 || !strings.Contains(o, "page server") {
		t.Fatalf("dump --page-server: exit %d\n%s%s", code, o, e)
	}
	p.Reap()
	if err := srv.Wait(); err != nil || !strings.Contains(out.String(), "page server done") {
		t.Fatalf("page-server: %v, %q", err, out.String())
	}
	// The page server now serves that image to a lazy restore elsewhere.
	srv = exec.Command(gocrBin, "page-server", "--address", "127.0.0.1", "--port", "0", "-D", dst, "--auth-token-file", token)
	stderr, _ = srv.StderrPipe()
	out.Reset()
	srv.Stdout = &out
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	n, _ = stderr.Read(line)
	if addr = regexp.MustCompile(`listening on (\S+)`).FindSubmatch(line[:n]); addr == nil {
		t.Fatalf("page-server says %q", line[:n])
	}
	at := lastCount(log)
	if o, e, code := gocr(t, "restore", "-d", "--lazy-pages", "--page-server", string(addr[1]), "--auth-token-file", token); code != 0 || !strings.Contains(o, "every page is in") {
		t.Fatalf("restore --lazy-pages --page-server: exit %d\n%s%s", code, o, e)
	}
	testutil.Adopt(t, p.Pid)
	testutil.WaitFor(t, "the restored counter", func() bool { return lastCount(log) >= at+10 })
	if err := srv.Wait(); err != nil {
		t.Fatalf("page-server serving the image: %v", err)
	}
}
