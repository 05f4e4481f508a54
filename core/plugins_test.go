package core_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/internal/testutil"
)

// call is one line of the example plugin's log.
type call struct {
	hook       string
	pid, fd    int
	path       string
	start, end int64
}

func readCalls(t *testing.T, path string) []call {
	var out []call
	for _, l := range testutil.Lines(path) {
		f := strings.Fields(l)
		if len(f) != 6 {
			t.Fatalf("bad log line %q", l)
		}
		c := call{hook: f[0], path: f[3]}
		c.pid, _ = strconv.Atoi(f[1])
		c.fd, _ = strconv.Atoi(f[2])
		c.start, _ = strconv.ParseInt(f[4], 10, 64)
		c.end, _ = strconv.ParseInt(f[5], 10, 64)
		out = append(out, c)
	}
	return out
}

// pluginTree starts plugfiles with the example plugin claiming its files, and returns the
// tree's pids and the directories.
func pluginTree(t *testing.T) (root *testutil.Proc, pids []int, dir, pluginDir, callLog string) {
	testutil.RequireRoot(t)
	pluginDir = testutil.BuildPlugin(t, "sdk/example/gocr-plugin-example", "example")
	dir = t.TempDir()
	os.Mkdir(filepath.Join(dir, "claimed"), 0o755)
	callLog = filepath.Join(dir, "calls.log")
	t.Setenv("GOCR_EXAMPLE_PREFIX", filepath.Join(dir, "claimed")+"/")
	t.Setenv("GOCR_EXAMPLE_LOG", callLog)
	t.Setenv("GOCR_EXAMPLE_DELAY", "20")
	root = testutil.Start(t, testutil.Build(t, "plugfiles"), dir)
	for i := 0; i < 4; i++ {
		testutil.WaitFor(t, "the processes to open their files", func() bool { return fileExists(filepath.Join(dir, fmt.Sprintf("ready-%d", i))) })
	}
	pids = append([]int{root.Pid}, testutil.Children(root.Pid)...)
	for _, pid := range pids[1:] {
		testutil.Adopt(t, pid)
	}
	return root, pids, dir, pluginDir, callLog
}

// pluginProcesses counts the example plugin's processes still alive.
func pluginProcesses(pluginDir string) int {
	n := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if exe, err := os.Readlink("/proc/" + e.Name() + "/exe"); err == nil && exe == filepath.Join(pluginDir, "gocr-plugin-example") {
			n++
		}
	}
	return n
}

// The ordering contract of docs/plugins.md, shown on a tree of 4 processes with 3 claimed
// files each: per process, calls come in fd order one at a time (rule 1); calls of different
// processes overlap at restore (rule 2); a call waiting for another process's call completes
// (rule 3); and the files come back working.
func TestPluginOrderingContract(t *testing.T) {
	root, pids, dir, pluginDir, callLog := pluginTree(t)
	img := filepath.Join(t.TempDir(), "img")
	if _, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{root.Pid}, Dir: img, Plugins: []string{"example"}, PluginDirs: []string{pluginDir}}); err != nil {
		t.Fatal(err)
	}
	waitReaped(t, root)
	for _, pid := range pids[1:] {
		testutil.KillAndReap(pid)
	}
	at := map[int]int{}
	for i := range pids {
		at[i] = lastInt(t, filepath.Join(dir, "claimed", fmt.Sprintf("p%d-0", i)))
	}
	if _, err := core.Restore(context.Background(), core.RestoreOptions{Dir: img, PluginDirs: []string{pluginDir}}); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		testutil.Adopt(t, pid)
	}
	for i := range pids {
		log := filepath.Join(dir, "claimed", fmt.Sprintf("p%d-0", i))
		testutil.WaitFor(t, "the claimed files to work again", func() bool { return lastInt(t, log) >= at[i]+5 })
		checkSequence(t, log, at[i]+5)
	}
	if n := pluginProcesses(pluginDir); n != 0 {
		t.Errorf("%d plugin processes left behind", n)
	}

	calls := readCalls(t, callLog)
	for _, hook := range []string{"dump", "restore"} {
		perPid := map[int][]call{}
		for _, c := range calls {
			if c.hook == hook {
				perPid[c.pid] = append(perPid[c.pid], c)
			}
		}
		if len(perPid) != 4 {
			t.Fatalf("%s calls for %d processes, want 4", hook, len(perPid))
		}
		for pid, cs := range perPid {
			if len(cs) != 3 {
				t.Errorf("%s: %d calls for pid %d, want 3", hook, len(cs), pid)
			}
			// Rule 1: in fd order, one at a time (ordered by start, each after the previous).
			sort.Slice(cs, func(i, j int) bool { return cs[i].start < cs[j].start })
			for i := 1; i < len(cs); i++ {
				if cs[i].fd <= cs[i-1].fd || cs[i].start < cs[i-1].end {
					t.Errorf("%s calls of pid %d not in fd order one at a time: %+v then %+v", hook, pid, cs[i-1], cs[i])
				}
			}
		}
	}
	// Rule 2: restore calls of different processes overlapped in time.
	overlap := false
	for _, a := range calls {
		for _, b := range calls {
			if a.hook == "restore" && b.hook == "restore" && a.pid != b.pid && a.start < b.end && b.start < a.end {
				overlap = true
			}
		}
	}
	if !overlap {
		t.Error("no two restore calls of different processes overlapped")
	}
}

// Rule 4 for configuration errors: an API version of no overlap, a file two plugins claim, a
// plugin that is not there (its dying, failing and hanging: TestPluginFailsAtEveryHook).
func TestPluginFailures(t *testing.T) {
	t.Run("API version mismatch", func(t *testing.T) {
		root, pids, dir, pluginDir, _ := pluginTree(t)
		t.Setenv("GOCR_EXAMPLE_API", "99")
		_, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{root.Pid}, Dir: filepath.Join(t.TempDir(), "img"), Plugins: []string{"example"}, PluginDirs: []string{pluginDir}})
		if err == nil || !strings.Contains(err.Error(), "API version 99") || !strings.Contains(err.Error(), "[1]") || !errors.Is(err, core.ErrIncompatible) {
			t.Fatalf("got %v, want an error naming both API versions", err)
		}
		for i, pid := range pids {
			running(t, pid, filepath.Join(dir, "claimed", fmt.Sprintf("p%d-0", i)))
		}
		if n := pluginProcesses(pluginDir); n != 0 {
			t.Errorf("%d plugin processes left behind", n)
		}
	})
	t.Run("claimed by two", func(t *testing.T) {
		root, pids, dir, pluginDir, _ := pluginTree(t)
		_, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{root.Pid}, Dir: filepath.Join(t.TempDir(), "img"), Plugins: []string{"example", "example"}, PluginDirs: []string{pluginDir}})
		if err == nil || !strings.Contains(err.Error(), "claimed by two plugins") {
			t.Fatalf("got %v, want a configuration error naming both claims", err)
		}
		for i, pid := range pids {
			running(t, pid, filepath.Join(dir, "claimed", fmt.Sprintf("p%d-0", i)))
		}
		if n := pluginProcesses(pluginDir); n != 0 {
			t.Errorf("%d plugin processes left behind", n)
		}
	})
	t.Run("missing plugin", func(t *testing.T) {
		root, pids, _, pluginDir, _ := pluginTree(t)
		img := filepath.Join(t.TempDir(), "img")
		if _, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{root.Pid}, Dir: img, Plugins: []string{"example"}, PluginDirs: []string{pluginDir}}); err != nil {
			t.Fatal(err)
		}
		waitReaped(t, root)
		for _, pid := range pids[1:] {
			testutil.KillAndReap(pid)
		}
		res, err := core.Restore(context.Background(), core.RestoreOptions{Dir: img, PluginDirs: []string{t.TempDir()}})
		if res != nil { // a gocr-plugin-example next to the test binary would be found
			for i := len(res.Pids) - 1; i >= 0; i-- {
				testutil.Adopt(t, res.Pids[i])
			}
		}
		if !errors.Is(err, core.ErrIncompatible) || !strings.Contains(err.Error(), "example") {
			t.Fatalf("got %v, want ErrIncompatible naming the plugin", err)
		}
		for _, pid := range pids {
			gone(t, pid)
		}
	})
}

// A mapping claimed by a plugin goes through the plugin's DumpVMA and RestoreVMA, which use
// every host service (memory, syscalls inside the process, an ioctl from the tracer thread, a
// dup of an fd, blobs in the image); the device hooks come in the order of docs/plugins.md.
// The dump names the plugin by its path.
func TestPluginMappingsAndHostServices(t *testing.T) {
	testutil.RequireRoot(t)
	pluginDir := testutil.BuildPlugin(t, "internal/testplugin/gocr-plugin-devtest", "devtest")
	p, dir := testutil.StartReady(t, "devmap")
	pluginLog := filepath.Join(t.TempDir(), "devtest.log")
	t.Setenv("GOCR_DEVTEST_PREFIX", filepath.Join(dir, "dev")+"/")
	t.Setenv("GOCR_DEVTEST_LOG", pluginLog)
	log := filepath.Join(dir, "count.log")
	testutil.WaitFor(t, "devmap to count", func() bool { return lastInt(t, log) >= 3 })
	img := filepath.Join(t.TempDir(), "img")
	// The plugin given by its path, as docs/plugins.md allows: the image names it devtest.
	byPath := filepath.Join(pluginDir, "gocr-plugin-devtest")
	if _, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img, Plugins: []string{byPath}}); err != nil {
		t.Fatal(err)
	}
	waitReaped(t, p)
	at := lastInt(t, log)
	if _, err := core.Restore(context.Background(), core.RestoreOptions{Dir: img, PluginDirs: []string{pluginDir}}); err != nil {
		t.Fatal(err)
	}
	testutil.Adopt(t, p.Pid)
	testutil.WaitFor(t, "devmap to go on counting in its mapping", func() bool { return lastInt(t, log) >= at+10 })
	checkSequence(t, log, at+10)

	var hooks []string
	for _, l := range testutil.Lines(pluginLog) {
		hooks = append(hooks, strings.Fields(l)[0])
	}
	want := "PauseDevices CheckpointDevices DumpVMA DumpDevicesLate Fini RestoreInit RestoreVMA ResumeDevicesLate Fini"
	if got := strings.Join(hooks, " "); got != want {
		t.Errorf("hooks in order:\n got %s\nwant %s", got, want)
	}
	logText := testutil.ReadFile(pluginLog)
	for _, w := range []string{`first="DEVICE-STATE"`, "fionread=100", "size=4096", "same=true"} {
		if !strings.Contains(logText, w) {
			t.Errorf("plugin log lacks %s:\n%s", w, logText)
		}
	}
	// Check mode asks the plugin too.
	t.Setenv("GOCR_DEVTEST_NO_DEVICE", "1")
	t.Setenv("GOCR_PLUGIN_DIR", pluginDir)
	rep, err := core.Check(img)
	found := false
	if rep != nil {
		for _, pr := range rep.Problems {
			found = found || strings.Contains(pr.Detail, "no such device here")
		}
	}
	if !found {
		t.Errorf("check mode: %v %v, want the plugin's problem", rep, err)
	}
}

// RestoreVMA calls of different processes run concurrently: the parent's mapping is restored
// only once the child's was (the test plugin waits for it), which would never happen if
// processes were restored one after the other.
func TestPluginRestoreVMAConcurrent(t *testing.T) {
	testutil.RequireRoot(t)
	pluginDir := testutil.BuildPlugin(t, "internal/testplugin/gocr-plugin-devtest", "devtest")
	p, dir := testutil.StartReady(t, "devmap", "pair")
	testutil.WaitFor(t, "the child", func() bool { return fileExists(filepath.Join(dir, "ready-peer")) })
	t.Setenv("GOCR_DEVTEST_PREFIX", filepath.Join(dir, "dev")+"/")
	t.Setenv("GOCR_DEVTEST_LOG", filepath.Join(t.TempDir(), "devtest.log"))
	kids := testutil.Children(p.Pid)
	img := filepath.Join(t.TempDir(), "img")
	if _, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img, Plugins: []string{"devtest"}, PluginDirs: []string{pluginDir}}); err != nil {
		t.Fatal(err)
	}
	waitReaped(t, p)
	for _, k := range kids {
		testutil.KillAndReap(k)
	}
	logs := []string{filepath.Join(dir, "count.log"), filepath.Join(dir, "peer.log")}
	at := []int{lastInt(t, logs[0]), lastInt(t, logs[1])}
	res, err := core.Restore(context.Background(), core.RestoreOptions{Dir: img, PluginDirs: []string{pluginDir}})
	if err != nil {
		t.Fatal(err)
	}
	for i := len(res.Pids) - 1; i >= 0; i-- {
		testutil.Adopt(t, res.Pids[i])
	}
	for i, log := range logs {
		testutil.WaitFor(t, "both to go on", func() bool { return lastInt(t, log) >= at[i]+5 })
		checkSequence(t, log, at[i]+5)
	}
}

// Rule 4 at every hook in turn: a plugin that fails, crashes or hangs in any dump hook leaves
// the tree running as before, and in any restore hook leaves nothing behind; the error names
// the plugin and says what happened (its own error, its panic, the time limit), and no
// plugin process is left.
func TestPluginFailsAtEveryHook(t *testing.T) {
	for _, hook := range []string{"pause", "checkpoint", "dump", "dump-late", "restore-init", "restore", "resume"} {
		for _, how := range []string{"GOCR_EXAMPLE_FAIL", "GOCR_EXAMPLE_CRASH", "GOCR_EXAMPLE_HANG"} {
			if how == "GOCR_EXAMPLE_HANG" && hook != "checkpoint" && hook != "resume" {
				continue // a hang costs the time limit: two hooks show it
			}
			t.Run(hook+"/"+strings.TrimPrefix(how, "GOCR_EXAMPLE_"), func(t *testing.T) {
				root, pids, dir, pluginDir, _ := pluginTree(t)
				t.Setenv("GOCR_EXAMPLE_DELAY", "0")
				img := filepath.Join(t.TempDir(), "img")
				opts := core.DumpOptions{Roots: []int{root.Pid}, Dir: img, Plugins: []string{"example"}, PluginDirs: []string{pluginDir}, PluginTimeout: 2 * time.Second}
				// The error names the plugin, and says what happened in the plugin's words.
				want := map[string][]string{
					"GOCR_EXAMPLE_FAIL":  {"failing in " + hook + ", as asked"},
					"GOCR_EXAMPLE_CRASH": {"the plugin process died", "crashing in " + hook},
					"GOCR_EXAMPLE_HANG":  {"the plugin hangs"},
				}[how]
				says := func(what string, err error) {
					t.Helper()
					for _, w := range append(want, "plugin example") {
						if err == nil || !strings.Contains(err.Error(), w) {
							t.Fatalf("%s: %v, want an error saying %q", what, err, w)
						}
					}
				}
				dumpHook := !strings.HasPrefix(hook, "restore") && hook != "resume"
				if dumpHook {
					t.Setenv(how, hook)
					_, err := core.Dump(context.Background(), opts)
					says("dump", err)
					if _, err := os.Stat(img); err == nil {
						t.Errorf("the failed dump left %s", img)
					}
					for i, pid := range pids {
						running(t, pid, filepath.Join(dir, "claimed", fmt.Sprintf("p%d-0", i)))
					}
				} else {
					if _, err := core.Dump(context.Background(), opts); err != nil {
						t.Fatal(err)
					}
					waitReaped(t, root)
					for _, pid := range pids[1:] {
						testutil.KillAndReap(pid)
					}
					t.Setenv(how, hook)
					_, err := core.Restore(context.Background(), core.RestoreOptions{Dir: img, PluginDirs: []string{pluginDir}, PluginTimeout: 2 * time.Second})
					says("restore", err)
					for _, pid := range pids {
						gone(t, pid)
					}
				}
				testutil.WaitFor(t, "no plugin process", func() bool { return pluginProcesses(pluginDir) == 0 })
			})
		}
	}
}
