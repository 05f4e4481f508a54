package core_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/internal/testutil"
)

// gone fails the test if pid exists: a failed restore must leave nothing behind.
func gone(t *testing.T, pid int) {
	t.Helper()
	testutil.ReapOrphans()
	if s, _ := testutil.ProcState(pid); s != "" {
		t.Fatalf("pid %d is left behind in state %s", pid, s)
	}
}

func TestRestoreFailures(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := context.Background()

	t.Run("pid in use", func(t *testing.T) {
		bin := testutil.Build(t, "counter")
		log := filepath.Join(t.TempDir(), "count.log")
		p := testutil.Start(t, bin, log)
		testutil.WaitFor(t, "counter to count", func() bool { return lastInt(t, log) >= 3 })
		img := dump(t, core.LeaveRunning, p.Pid)
		_, err := core.Restore(ctx, core.RestoreOptions{Dir: img})
		if !errors.Is(err, core.ErrPidInUse) || !strings.Contains(err.Error(), "counter") {
			t.Fatalf("got %v, want ErrPidInUse naming the counter", err)
		}
		running(t, p.Pid, log)
	})
	t.Run("missing binary", func(t *testing.T) {
		bin := testutil.CopyBinary(t, testutil.Build(t, "counter"))
		log := filepath.Join(t.TempDir(), "count.log")
		p := testutil.Start(t, bin, log)
		testutil.WaitFor(t, "counter to count", func() bool { return lastInt(t, log) >= 3 })
		img := dump(t, core.Kill, p.Pid)
		waitReaped(t, p)
		os.Remove(bin)
		_, err := core.Restore(ctx, core.RestoreOptions{Dir: img})
		if !errors.Is(err, core.ErrIncompatible) || !strings.Contains(err.Error(), bin) {
			t.Fatalf("got %v, want ErrIncompatible naming %s", err, bin)
		}
		gone(t, p.Pid)
	})
	t.Run("changed binary", func(t *testing.T) {
		bin := testutil.CopyBinary(t, testutil.Build(t, "counter"))
		b, _ := os.ReadFile(bin)
		log := filepath.Join(t.TempDir(), "count.log")
		p := testutil.Start(t, bin, log)
		testutil.WaitFor(t, "counter to count", func() bool { return lastInt(t, log) >= 3 })
		img := dump(t, core.Kill, p.Pid)
		waitReaped(t, p)
		b[len(b)-100] ^= 0xff // same size, other content
		os.WriteFile(bin, b, 0o755)
		_, err := core.Restore(ctx, core.RestoreOptions{Dir: img})
		if !errors.Is(err, core.ErrIncompatible) || !strings.Contains(err.Error(), bin+": content differs") {
			t.Fatalf("got %v, want ErrIncompatible naming %s", err, bin)
		}
		gone(t, p.Pid)
	})
	t.Run("damaged page file", func(t *testing.T) {
		bin := testutil.Build(t, "counter")
		log := filepath.Join(t.TempDir(), "count.log")
		p := testutil.Start(t, bin, log)
		testutil.WaitFor(t, "counter to count", func() bool { return lastInt(t, log) >= 3 })
		img := dump(t, core.Kill, p.Pid)
		waitReaped(t, p)
		pages := filepath.Join(img, image.PagesName(int32(p.Pid)))
		b, err := os.ReadFile(pages)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x40
		os.WriteFile(pages, b, 0o600)
		_, err = core.Restore(ctx, core.RestoreOptions{Dir: img})
		var ce *image.CorruptError
		if !errors.As(err, &ce) || ce.File != filepath.Base(pages) {
			t.Fatalf("got %v, want a CorruptError naming %s", err, filepath.Base(pages))
		}
		gone(t, p.Pid)
	})
	t.Run("interrupted", func(t *testing.T) {
		b, _ := testutil.StartReady(t, "bigmem", "64")
		img := dump(t, core.Kill, b.Pid)
		waitReaped(t, b)
		cctx, cancel := context.WithCancel(ctx)
		_, err := core.Restore(cctx, core.RestoreOptions{Dir: img, Progress: func(core.Progress) { cancel() }})
		if !errors.Is(err, core.ErrInterrupted) {
			t.Fatalf("got %v, want ErrInterrupted", err)
		}
		gone(t, b.Pid)
	})
}

// A process with 2 GiB comes back with every byte as it was.
func TestRestoreTwoGiB(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "bigmem", "2048")
	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	res := restore(t, img)
	if res.Stats.Bytes < 2<<30 {
		t.Fatalf("restored %d bytes of memory, want at least 2 GiB", res.Stats.Bytes)
	}
	syscall.Kill(p.Pid, syscall.SIGUSR1)
	report := filepath.Join(dir, "report")
	testutil.WaitFor(t, "memory check", func() bool { return len(testutil.Lines(report)) > 0 })
	if got := testutil.Lines(report)[0]; got != "ok 1" {
		t.Fatalf("memory check after restore: %s", got)
	}
}

// python3, a program no one here wrote, keeps the state it holds in memory.
func TestRestorePython(t *testing.T) {
	testutil.RequireRoot(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed (CI installs it): %v", err)
	}
	log := filepath.Join(t.TempDir(), "py.log")
	script := `
import sys, time
state = {"n": 0, "data": [i * i for i in range(200000)]}
total = sum(state["data"])
log = open(sys.argv[1], "w", buffering=1)
while True:
    state["n"] += 1
    log.write(f"{state['n']} {state['n'] + sum(state['data']) - total}\n")
    time.sleep(0.005)
`
	p := testutil.Start(t, py, "-c", script, log)
	testutil.WaitFor(t, "python to count", func() bool { return lastInt(t, log) >= 5 })
	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	at := lastInt(t, log)
	restore(t, img)
	testutil.WaitFor(t, "python to go on", func() bool { return lastInt(t, log) >= at+20 })
	checkSequence(t, log, at+20)
}
