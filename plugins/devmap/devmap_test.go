package devmap_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// loopDevice attaches a loop device to a fresh file of n bytes, detached at the end.
func loopDevice(t *testing.T, n int64) string {
	t.Helper()
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup (util-linux) is not installed: no block device to map")
	}
	f := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(f, make([]byte, n), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", f).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device here (losetup: %v: %s)", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// A process counting in a shared mapping of a block device is dumped and restored with the
// devmap plugin: the mapping is back at its address and offset, on the same device, and the
// count goes on from the value the device holds; without the plugin the dump is refused.
func TestRestoreDeviceMapping(t *testing.T) {
	testutil.RequireRoot(t)
	dev := loopDevice(t, 1<<20)
	plugins := testutil.BuildPlugin(t, "plugins/devmap/gocr-plugin-devmap", "devmap")
	p, dir := testutil.StartReady(t, "devmapped", dev)
	log := filepath.Join(dir, "count.log")
	ctx := context.Background()

	if _, err := core.Dump(ctx, core.DumpOptions{Roots: []int{p.Pid}, Dir: filepath.Join(t.TempDir(), "img")}); err == nil || !strings.Contains(err.Error(), dev) || !strings.Contains(err.Error(), "--plugin devmap") {
		t.Fatalf("dump without the plugin: %v, want a refusal naming %s", err, dev)
	}
	opts := core.DumpOptions{Roots: []int{p.Pid}, Plugins: []string{"devmap"}, PluginDirs: []string{plugins}}
	opts.Dir, opts.Final = filepath.Join(t.TempDir(), "img"), core.LeaveRunning
	if _, err := core.Dump(ctx, opts); err != nil {
		t.Fatalf("dump leaving it running: %v", err)
	}
	opts.Dir, opts.Final = filepath.Join(t.TempDir(), "img"), core.Kill
	if _, err := core.Dump(ctx, opts); err != nil {
		t.Fatalf("dump: %v", err)
	}
	p.Reap()
	at := testutil.LastCount(log)
	res, err := core.Restore(ctx, core.RestoreOptions{Dir: opts.Dir, PluginDirs: []string{plugins}})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	for _, pid := range res.Pids {
		testutil.Adopt(t, pid)
	}
	testutil.WaitFor(t, "the count to go on", func() bool { return testutil.LastCount(log) >= at+10 })
	for i, l := range testutil.Lines(log) {
		if l != fmt.Sprintf("%d %d", i+1, i+1) {
			t.Fatalf("log line %d is %q: the count did not go on from the device", i+1, l)
		}
	}
	maps := testutil.ReadFile(fmt.Sprintf("/proc/%d/maps", p.Pid))
	if !strings.Contains(maps, " rw-s 00001000 ") || !strings.Contains(maps, dev) {
		t.Fatalf("restored mappings do not show %s shared at offset 0x1000:\n%s", dev, maps)
	}
}

// With the devmap plugin loaded, shared anonymous memory (whose mapping shows /dev/zero
// (deleted)) stays the core's: a tree sharing a page is dumped and restored, the page shared
// again.
func TestSharedMemoryStaysTheCores(t *testing.T) {
	testutil.RequireRoot(t)
	plugins := testutil.BuildPlugin(t, "plugins/devmap/gocr-plugin-devmap", "devmap")
	dir := t.TempDir()
	p := testutil.Start(t, testutil.Build(t, "tree"), dir)
	shared := filepath.Join(dir, "shared.log")
	testutil.WaitFor(t, "the tree to share its page", func() bool { return len(testutil.Lines(shared)) >= 3 })
	kids := testutil.Children(p.Pid)
	img := filepath.Join(t.TempDir(), "img")
	if _, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img, Plugins: []string{"devmap"}, PluginDirs: []string{plugins}}); err != nil {
		t.Fatalf("dump with the devmap plugin: %v", err)
	}
	p.Reap()
	for _, k := range kids {
		testutil.KillAndReap(k)
	}
	testutil.ReapOrphans()
	at := len(testutil.Lines(shared))
	res, err := core.Restore(context.Background(), core.RestoreOptions{Dir: img, PluginDirs: []string{plugins}})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	for _, pid := range res.Pids {
		testutil.Adopt(t, pid)
	}
	testutil.WaitFor(t, "echo to follow ping through the shared page", func() bool {
		lines := testutil.Lines(shared)
		if len(lines) < at+10 {
			return false
		}
		var ping, echo int
		fmt.Sscan(lines[len(lines)-1], &ping, &echo)
		return echo > at && ping-echo <= 2
	})
}

// A device mapped at the dump that is gone since: check mode says so, and the restore refuses
// the image in the same words before any process is made (it used to restore a process that
// died of SIGBUS while gocr said it ran).
func TestRestoreRefusesAGoneDevice(t *testing.T) {
	testutil.RequireRoot(t)
	dev := loopDevice(t, 1<<20)
	plugins := testutil.BuildPlugin(t, "plugins/devmap/gocr-plugin-devmap", "devmap")
	t.Setenv("GOCR_PLUGIN_DIR", plugins)
	p, _ := testutil.StartReady(t, "devmapped", dev)
	img := filepath.Join(t.TempDir(), "img")
	if _, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img, Plugins: []string{"devmap"}, PluginDirs: []string{plugins}}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	p.Reap()
	if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
		t.Fatalf("losetup -d: %v %s", err, out)
	}
	testutil.WaitFor(t, "the device to be detached", func() bool {
		return strings.TrimSpace(testutil.ReadFile("/sys/block/"+filepath.Base(dev)+"/size")) == "0"
	})
	testutil.Refused(t, core.RestoreOptions{Dir: img, PluginDirs: []string{plugins}}, "device "+dev+" is not here", p.Pid)
}
