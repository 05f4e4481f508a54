package core_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/internal/testutil"
)

// A dump into a file system that fills up fails with ENOSPC named, leaves the process running
// as it was (not stopped, not traced), and leaves no image, partial or whole.
func TestDumpOnAFullDisk(t *testing.T) {
	testutil.RequireRoot(t)
	mnt := t.TempDir()
	if err := syscall.Mount("gocr-full", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a small tmpfs here: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	p, dir := testutil.StartReady(t, "bigmem", "8")
	img := filepath.Join(mnt, "img")
	_, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("dump on a full disk: %v, want ENOSPC", err)
	}
	if ents, _ := os.ReadDir(mnt); len(ents) != 0 {
		t.Fatalf("the failed dump left %v in %s", ents, mnt)
	}
	if st, tracer := testutil.ProcState(p.Pid); st == "T" || st == "t" || tracer != 0 {
		t.Fatalf("after the failed dump the process is %s, traced by %d", st, tracer)
	}
	// It still checks its memory whole.
	syscall.Kill(p.Pid, syscall.SIGUSR1)
	report := filepath.Join(dir, "report")
	testutil.WaitFor(t, "a report", func() bool { return len(testutil.Lines(report)) > 0 })
	if r := testutil.Lines(report)[0]; !strings.HasPrefix(r, "ok") {
		t.Fatalf("after the failed dump the process found its memory %q", r)
	}
}
