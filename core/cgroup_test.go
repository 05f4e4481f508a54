package core_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/internal/testutil"
)

// childCgroup makes a cgroup under this test's own in some hierarchy where it may, and
// returns the line /proc/PID/cgroup shows for a process in it, and its directory.
func childCgroup(t *testing.T) (line, dir string) {
	t.Helper()
	mine, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("gocr-test-%d", os.Getpid())
	for _, l := range strings.Split(strings.TrimSpace(string(mine)), "\n") {
		f := strings.SplitN(l, ":", 3)
		for _, m := range strings.Split(string(mounts), "\n") {
			pre, post, _ := strings.Cut(m, " - ")
			mf, pf := strings.Fields(pre), strings.Fields(post)
			if len(mf) < 5 || len(pf) < 3 || mf[3] != "/" {
				continue
			}
			v1 := pf[0] == "cgroup" && f[1] != "" && strings.Contains(","+pf[2]+",", ","+f[1]+",")
			v2 := pf[0] == "cgroup2" && f[1] == ""
			if !v1 && !v2 {
				continue
			}
			d := filepath.Join(mf[4], f[2], name)
			if os.Mkdir(d, 0o755) == nil {
				t.Cleanup(func() { os.Remove(d) })
				return fmt.Sprintf("%s:%s:%s", f[0], f[1], filepath.Join(f[2], name)), d
			}
		}
	}
	t.Skip("no cgroup hierarchy here lets a child cgroup be made")
	return "", ""
}

// dumpInCgroup starts a counter in a cgroup of its own and dumps it (killed). It returns the
// process, its log, its /proc/PID/cgroup line for that cgroup, the cgroup's directory and the
// image.
func dumpInCgroup(t *testing.T) (p *testutil.Proc, log, line, dir, img string) {
	t.Helper()
	line, dir = childCgroup(t)
	log = filepath.Join(t.TempDir(), "count.log")
	p = testutil.Start(t, testutil.Build(t, "counter"), log)
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(fmt.Sprint(p.Pid)), 0); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "counter", func() bool { return lastInt(t, log) >= 3 })
	img = dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	return p, log, line, dir, img
}

// A process in a cgroup of its own comes back in it, even after the cgroup was removed
// (it is made again).
func TestRestoreCgroup(t *testing.T) {
	testutil.RequireRoot(t)
	p, log, line, dir, img := dumpInCgroup(t)
	if err := os.Remove(dir); err != nil {
		t.Fatalf("remove the emptied cgroup: %v", err)
	}
	at := lastInt(t, log)
	restore(t, img)
	t.Cleanup(func() { testutil.KillAndReap(p.Pid) }) // before the cgroup is removed
	testutil.WaitFor(t, "counter to go on", func() bool { return lastInt(t, log) >= at+10 })
	if cg := testutil.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p.Pid)); !strings.Contains(cg, line+"\n") {
		t.Fatalf("restored process's cgroups:\n%s\nwant the line %s", cg, line)
	}
}

// With NoCgroups (--manage-cgroups=none) the restored process stays in gocr's cgroups.
func TestRestoreCgroupNone(t *testing.T) {
	testutil.RequireRoot(t)
	p, _, line, _, img := dumpInCgroup(t)
	res, err := core.Restore(t.Context(), core.RestoreOptions{Dir: img, NoCgroups: true})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Adopt(t, res.Pids[0])
	t.Cleanup(func() { testutil.KillAndReap(p.Pid) })
	mine := testutil.ReadFile("/proc/self/cgroup")
	if cg := testutil.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p.Pid)); strings.Contains(cg, line+"\n") || cg != mine {
		t.Fatalf("restored process's cgroups:\n%s\nwant this test's:\n%s", cg, mine)
	}
}
