package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/internal/testutil"
	"github.com/gocr/gocr/service"
	"github.com/gocr/gocr/service/servicepb"
)

// startService runs `gocr service` on a socket and returns a client of it.
func startService(t *testing.T) *service.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "gocr.sock")
	cmd := exec.Command(gocrBin, "service", "--socket", sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	testutil.WaitFor(t, "the service's socket", func() bool { st, err := os.Stat(sock); return err == nil && st.Mode()&os.ModeSocket != 0 })
	c, err := service.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readlink(pid, fd int) string {
	s, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	return s
}

// A program drives gocr through its gRPC service: a dump of 256 MiB streams memory progress
// and leaves the process running; a dump that kills it, a check, a restore whose process
// checks its whole memory; a pid that does not exist and a tree holding a packet socket come
// back as typed errors naming the process and the resource.
func TestService(t *testing.T) {
	testutil.RequireRoot(t)
	c := startService(t)
	ctx := context.Background()
	p, dir := testutil.StartReady(t, "bigmem", "256")
	img := filepath.Join(t.TempDir(), "img")
	var last *service.Progress
	res, err := c.Dump(ctx, &servicepb.DumpRequest{Pids: []int32{int32(p.Pid)}, Dir: filepath.Join(t.TempDir(), "running"), LeaveRunning: true},
		func(pr *service.Progress) { last = pr })
	if err != nil {
		t.Fatalf("dump leaving it running: %v", err)
	}
	if last == nil || last.Stage != "memory" || last.Total < 256<<20 || res.Bytes < 256<<20 {
		t.Errorf("progress %v, result %v: want memory progress up to 256 MiB", last, res)
	}
	if !testutil.Alive(p.Pid) {
		t.Fatal("the dump with leave_running killed it")
	}
	if _, err := c.Dump(ctx, &servicepb.DumpRequest{Pids: []int32{int32(p.Pid)}, Dir: img}, nil); err != nil {
		t.Fatalf("dump: %v", err)
	}
	p.Reap()
	if problems, err := c.Check(ctx, img); err != nil || len(problems) > 0 {
		t.Fatalf("check: %v, %v", problems, err)
	}
	res, err = c.Restore(ctx, &servicepb.RestoreRequest{Dir: img}, nil)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if len(res.Roots) != 1 || int(res.Roots[0]) != p.Pid {
		t.Fatalf("restored roots %v, want [%d]", res.Roots, p.Pid)
	}
	syscall.Kill(p.Pid, syscall.SIGUSR1)
	report := filepath.Join(dir, "report")
	testutil.WaitFor(t, "the restored process to check its memory", func() bool { return len(testutil.Lines(report)) > 0 })
	if l := testutil.Lines(report)[0]; !strings.HasPrefix(l, "ok") {
		t.Fatalf("the restored process says %q", l)
	}
	syscall.Kill(p.Pid, syscall.SIGKILL) // the service reaps it

	var se *service.Error
	_, err = c.Dump(ctx, &servicepb.DumpRequest{Pids: []int32{4194000}, Dir: filepath.Join(t.TempDir(), "none")}, nil)
	if !errors.As(err, &se) || se.Reason != service.ReasonNoProcess {
		t.Fatalf("dump of a pid that does not exist: %v, want reason %s", err, service.ReasonNoProcess)
	}
	odd := testutil.Start(t, testutil.Build(t, "oddfd"), filepath.Join(t.TempDir(), "log"))
	testutil.WaitFor(t, "oddfd's socket", func() bool { return strings.HasPrefix(readlink(odd.Pid, 4), "socket:") })
	_, err = c.Dump(ctx, &servicepb.DumpRequest{Pids: []int32{int32(odd.Pid)}, Dir: filepath.Join(t.TempDir(), "odd")}, nil)
	if !errors.As(err, &se) || se.Reason != service.ReasonUnsupported || se.Pid != odd.Pid || se.What != "fd 4" {
		t.Fatalf("dump of a packet socket: %v (%+v), want reason %s naming pid %d fd 4", err, se, service.ReasonUnsupported, odd.Pid)
	}
}

// Memory through the service: reset the tracking, see the written pages, dump only them,
// roll the process back with apply, and restore it lazily.
func TestServiceMemory(t *testing.T) {
	testutil.RequireRoot(t)
	for _, f := range core.Features() {
		if strings.HasPrefix(f.Name, "userfaultfd write-protect") && !f.Present {
			t.Skipf("no %s here: %s", f.Name, f.Detail)
		}
	}
	c := startService(t)
	ctx := context.Background()
	p, dir := testutil.StartReady(t, "trackpages")
	pid := int32(p.Pid)
	base := filepath.Join(t.TempDir(), "base")
	if _, err := c.Dump(ctx, &servicepb.DumpRequest{Pids: []int32{pid}, Dir: base, LeaveRunning: true, Compress: true}, nil); err != nil {
		t.Fatalf("dump: %v", err)
	}
	if _, err := c.Track(ctx, []int32{pid}, true); err != nil {
		t.Fatalf("track reset: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "cmd"), []byte("write 2 5 6 7\n"), 0o644)
	syscall.Kill(p.Pid, syscall.SIGUSR2)
	testutil.WaitFor(t, "the writes", func() bool { _, err := os.Stat(filepath.Join(dir, "done-2")); return err == nil })
	procs, err := c.Track(ctx, []int32{pid}, false)
	if err != nil || len(procs) != 1 || !procs[0].Tracked || procs[0].Pages < 3 {
		t.Fatalf("track: %v, %v: want the process tracked with at least the 3 pages written", procs, err)
	}
	if _, err := c.Dump(ctx, &servicepb.DumpRequest{Pids: []int32{pid}, Dir: filepath.Join(t.TempDir(), "delta"), LeaveRunning: true, Tracked: true}, nil); err != nil {
		t.Fatalf("tracked dump: %v", err)
	}
	if _, err := c.Apply(ctx, pid, base); err != nil {
		t.Fatalf("apply: %v", err)
	}
	syscall.Kill(p.Pid, syscall.SIGUSR1)
	report := filepath.Join(dir, "report")
	testutil.WaitFor(t, "a report", func() bool { return len(testutil.Lines(report)) >= 1 })
	if got := testutil.Lines(report)[0]; got != "ok 1" {
		t.Fatalf("after apply through the service: %q", got)
	}
	img := filepath.Join(t.TempDir(), "img")
	if _, err := c.Dump(ctx, &servicepb.DumpRequest{Pids: []int32{pid}, Dir: img}, nil); err != nil {
		t.Fatalf("dump: %v", err)
	}
	p.Reap()
	if _, err := c.Restore(ctx, &servicepb.RestoreRequest{Dir: img, LazyPages: true}, nil); err != nil {
		t.Fatalf("lazy restore: %v", err)
	}
	syscall.Kill(p.Pid, syscall.SIGUSR1)
	testutil.WaitFor(t, "a report", func() bool { return len(testutil.Lines(report)) >= 2 })
	if got := testutil.Lines(report)[1]; got != "ok 1" {
		t.Fatalf("after a lazy restore through the service: %q", got)
	}
	syscall.Kill(p.Pid, syscall.SIGKILL) // the service reaps it
}
