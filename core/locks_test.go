package core_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/internal/testutil"
)

const fOFDGetlk = 36 // F_OFD_GETLK, not in package syscall

// lockOn asks the kernel who holds a lock conflicting with a write (or read) lock on bytes
// start..start+n-1 of path: the lock type and the holder's pid (-1 for an OFD lock), or
// F_UNLCK. cmd is F_GETLK or F_OFD_GETLK.
func lockOn(t *testing.T, path string, cmd int, write bool, start, n int64) (int16, int32) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_RDLCK, Start: start, Len: n}
	if write {
		lk.Type = syscall.F_WRLCK
	}
	if err := syscall.FcntlFlock(f.Fd(), cmd, &lk); err != nil {
		t.Fatal(err)
	}
	return lk.Type, lk.Pid
}

// flockHeld says whether a process outside the tree is refused flock(LOCK_EX) on path.
func flockHeld(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err != nil && err != syscall.EWOULDBLOCK {
		t.Fatal(err)
	}
	return err != nil
}

// File locks of every kind come back held by the same owners: a process outside the tree is
// refused them, F_GETLK names the restored process holding each POSIX lock, and a restored
// process can release its own.
func TestRestoreFileLocks(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "locks")
	kids := testutil.Children(p.Pid)
	if len(kids) != 1 {
		t.Fatalf("locks has %d children, want 1", len(kids))
	}
	child := int32(kids[0])
	parent := int32(p.Pid)
	flock, posix, ofd := filepath.Join(dir, "flock"), filepath.Join(dir, "posix"), filepath.Join(dir, "ofd")
	held := func(stage string) {
		t.Helper()
		if !flockHeld(t, flock) {
			t.Errorf("%s: the flock on %s is free", stage, flock)
		}
		for _, c := range []struct {
			start, n int64
			typ      int16
			pid      int32
		}{{10, 10, syscall.F_WRLCK, parent}, {100, 1000, syscall.F_RDLCK, parent}, {50, 10, syscall.F_WRLCK, child}, {0, 10, syscall.F_UNLCK, 0}} {
			if typ, pid := lockOn(t, posix, syscall.F_GETLK, true, c.start, c.n); typ != c.typ || (typ != syscall.F_UNLCK && pid != c.pid) {
				t.Errorf("%s: POSIX lock on bytes %d-%d: type %d by %d, want type %d by %d", stage, c.start, c.start+c.n-1, typ, pid, c.typ, c.pid)
			}
		}
		if typ, pid := lockOn(t, ofd, fOFDGetlk, true, 0, 5); typ != syscall.F_RDLCK || pid != -1 {
			t.Errorf("%s: OFD lock on bytes 0-4: type %d by %d, want a read lock by an open file description", stage, typ, pid)
		}
		if typ, _ := lockOn(t, ofd, fOFDGetlk, true, 5, 5); typ != syscall.F_UNLCK {
			t.Errorf("%s: OFD lock on bytes 5-9: type %d, want none", stage, typ)
		}
	}
	held("before the dump")
	dump(t, core.LeaveRunning, p.Pid)
	held("after a dump that left the tree running")

	img := dumpTree(t, p)
	if flockHeld(t, flock) {
		t.Fatal("the flock is still held after the tree was killed")
	}
	if typ, _ := lockOn(t, posix, syscall.F_GETLK, true, 0, 0); typ != syscall.F_UNLCK {
		t.Fatal("a POSIX lock is still held after the tree was killed")
	}

	restore(t, img)
	held("after the restore")
	// The parent releases its write lock: it is its own, not gocr's.
	syscall.Kill(p.Pid, syscall.SIGUSR1)
	report := filepath.Join(dir, "report")
	testutil.WaitFor(t, "the unlock", func() bool { return strings.Contains(testutil.ReadFile(report), "unlocked") })
	if typ, _ := lockOn(t, posix, syscall.F_GETLK, true, 10, 10); typ != syscall.F_UNLCK {
		t.Errorf("bytes 10-19 still locked after the restored process released them")
	}
	if typ, pid := lockOn(t, posix, syscall.F_GETLK, true, 100, 1); typ != syscall.F_RDLCK || pid != parent {
		t.Errorf("read lock from byte 100: type %d by %d after the release of another range", typ, pid)
	}
}

// A lock taken since the dump by a process outside the tree stops the restore before any
// process is made, naming the file and the holder.
func TestRestoreFileLockTaken(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "locks")
	img := dumpTree(t, p)
	f, err := os.OpenFile(filepath.Join(dir, "ofd"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Start: 2, Len: 1}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	res, err := core.Restore(t.Context(), core.RestoreOptions{Dir: img})
	if err == nil {
		for i := len(res.Pids) - 1; i >= 0; i-- {
			testutil.KillAndReap(res.Pids[i])
		}
		t.Fatal("the restore went on with a lock of the tree taken")
	}
	if !strings.Contains(err.Error(), filepath.Join(dir, "ofd")) || !strings.Contains(err.Error(), "process "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("got %v, want ErrLockHeld naming the file and this process", err)
	}
	if !errors.Is(err, core.ErrLockHeld) {
		t.Fatalf("got %v, want ErrLockHeld", err)
	}
	if testutil.Alive(p.Pid) {
		t.Fatal("a process was left behind")
	}
}
