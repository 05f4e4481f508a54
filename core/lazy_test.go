package core_test

import (
	"errors"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/internal/testutil"
)

// A process holding 1 GiB is restored lazily: it runs (its log goes on) while gocr has not
// copied all its memory yet, it forks and drops memory meanwhile (the child checks all of
// its memory, the dropped part reads as zeros), and once every page is in it checks every
// byte.
func TestLazyRestore(t *testing.T) {
	testutil.RequireRoot(t)
	const mib = 1024
	p, dir := testutil.StartReady(t, "lazymem", "1024")
	log, report := filepath.Join(dir, "log"), filepath.Join(dir, "report")
	testutil.WaitFor(t, "ticks", func() bool { return testutil.LastCount(log) >= 3 })
	img := filepath.Join(t.TempDir(), "img")
	if _, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img, NoSync: true}); err != nil {
		t.Fatal(err)
	}
	waitReaped(t, p)
	at := testutil.LastCount(log)
	res, err := core.Restore(t.Context(), core.RestoreOptions{Dir: img, LazyPages: true})
	if err != nil {
		t.Fatalf("lazy restore: %v", err)
	}
	testutil.Adopt(t, res.Pids[0])
	testutil.WaitFor(t, "a tick after the restore", func() bool { return testutil.LastCount(log) > at })
	copied, total, _ := res.LazyStats()
	if total < mib<<20 {
		t.Fatalf("%d bytes to serve lazily, want the process's %d MiB", total, mib)
	}
	if copied >= total {
		t.Errorf("the restored process ran only once all %d bytes were in: nothing was lazy", total)
	}
	syscall.Kill(p.Pid, syscall.SIGUSR2)
	testutil.WaitFor(t, "the child's report", func() bool { return len(testutil.Lines(report)) >= 1 })
	if got := testutil.Lines(report)[0]; got != "child ok" {
		t.Fatalf("a child forked during the lazy restore says %q", got)
	}
	if err := res.WaitPages(); err != nil {
		t.Fatalf("wait for the pages: %v", err)
	}
	if got := ask(t, p.Pid, report, 2); got != "ok" {
		t.Fatalf("once every page is in, the process says %q", got)
	}
}

// A page file damaged past what the restore itself reads: the lazy restore starts the tree,
// finds the bad chunk when it comes to it, and kills the tree rather than let it run with
// that memory missing; the error names the file.
func TestLazyRestoreDamagedPages(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "lazymem", "256")
	testutil.WaitFor(t, "ticks", func() bool { return testutil.LastCount(filepath.Join(dir, "log")) >= 3 })
	img := filepath.Join(t.TempDir(), "img")
	if _, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img, NoSync: true}); err != nil {
		t.Fatal(err)
	}
	waitReaped(t, p)
	_, name := damagePages(t, img, p.Pid, 200<<20, []byte{0xff, 0xee})
	res, err := core.Restore(t.Context(), core.RestoreOptions{Dir: img, LazyPages: true})
	if err != nil {
		t.Fatalf("lazy restore: %v (the damage is beyond what it reads before the tree runs)", err)
	}
	testutil.Adopt(t, res.Pids[0])
	err = res.WaitPages()
	if !errors.Is(err, image.ErrCorrupt) || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("lazy restore of a damaged page file: %v, want an error naming %s and saying the tree was killed", err, name)
	}
	testutil.WaitFor(t, "the tree to be killed", func() bool {
		st, _ := testutil.ProcState(p.Pid)
		return st == "" || st == "Z"
	})
}

// A lazy restore from a page server serving the image over loopback: the metadata comes at
// once, the pages as they are needed; the process runs, forks, and checks every byte.
func TestLazyRestoreFromPageServer(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "lazymem", "512")
	log, report := filepath.Join(dir, "log"), filepath.Join(dir, "report")
	testutil.WaitFor(t, "ticks", func() bool { return testutil.LastCount(log) >= 3 })
	img := filepath.Join(t.TempDir(), "img")
	if _, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img, NoSync: true}); err != nil {
		t.Fatal(err)
	}
	waitReaped(t, p)
	addr, served := servePages(t, img, nil)
	if _, err := core.Restore(t.Context(), core.RestoreOptions{PageServer: addr, PageServerToken: pageToken}); !errors.Is(err, core.ErrBadArgs) {
		t.Fatalf("restore from a page server without lazy pages: %v", err)
	}
	addr, served = servePages(t, img, nil)
	at := testutil.LastCount(log)
	res, err := core.Restore(t.Context(), core.RestoreOptions{LazyPages: true, PageServer: addr, PageServerToken: pageToken})
	if err != nil {
		t.Fatalf("lazy restore from the page server: %v", err)
	}
	testutil.Adopt(t, res.Pids[0])
	testutil.WaitFor(t, "a tick after the restore", func() bool { return testutil.LastCount(log) > at })
	syscall.Kill(p.Pid, syscall.SIGUSR2)
	testutil.WaitFor(t, "the child's report", func() bool { return len(testutil.Lines(report)) >= 1 })
	if got := testutil.Lines(report)[0]; got != "child ok" {
		t.Fatalf("a child forked during the lazy restore says %q", got)
	}
	if err := res.WaitPages(); err != nil {
		t.Fatalf("wait for the pages: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("page server: %v", err)
	}
	if got := ask(t, p.Pid, report, 2); got != "ok" {
		t.Fatalf("once every page is in, the process says %q", got)
	}
}

// cutWrites is a connection that dies after writing limit bytes: a page server killed.
type cutWrites struct {
	net.Conn
	left int
}

func (c *cutWrites) Write(b []byte) (int, error) {
	if len(b) > c.left {
		c.Conn.Close()
		return 0, errors.New("killed")
	}
	c.left -= len(b)
	return c.Conn.Write(b)
}

type cutWritesListener struct{ net.Listener }

func (l cutWritesListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &cutWrites{Conn: c, left: 100 << 20}, nil
}

// The page server dies while the pages come: the tree is killed, and the error says why.
func TestLazyRestorePageServerDies(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "lazymem", "512")
	testutil.WaitFor(t, "ticks", func() bool { return testutil.LastCount(filepath.Join(dir, "log")) >= 3 })
	img := filepath.Join(t.TempDir(), "img")
	if _, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img, NoSync: true}); err != nil {
		t.Fatal(err)
	}
	waitReaped(t, p)
	addr, _ := servePages(t, img, func(l net.Listener) net.Listener { return cutWritesListener{l} })
	res, err := core.Restore(t.Context(), core.RestoreOptions{LazyPages: true, PageServer: addr, PageServerToken: pageToken})
	if err != nil {
		t.Fatalf("lazy restore: %v (the server dies later)", err)
	}
	testutil.Adopt(t, res.Pids[0])
	err = res.WaitPages()
	if err == nil || !strings.Contains(err.Error(), "page server") || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("lazy restore whose page server dies: %v, want an error naming the page server and saying the tree was killed", err)
	}
	testutil.WaitFor(t, "the tree to be killed", func() bool {
		st, _ := testutil.ProcState(p.Pid)
		return st == "" || st == "Z"
	})
}

// A lazy restore of a pre-dump chain takes pages from every image of it: the process checks
// every page (written, dropped, untouched since the first image).
func TestLazyRestoreChain(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "incr")
	base := t.TempDir()
	d1, d2 := filepath.Join(base, "1"), filepath.Join(base, "2")
	if _, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{p.Pid}, Dir: d1, PreDump: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{p.Pid}, Dir: d2, Parent: "../1"}); err != nil {
		t.Fatal(err)
	}
	waitReaped(t, p)
	res, err := core.Restore(t.Context(), core.RestoreOptions{Dir: d2, LazyPages: true})
	if err != nil {
		t.Fatalf("lazy restore of a chain: %v", err)
	}
	testutil.Adopt(t, res.Pids[0])
	if err := res.WaitPages(); err != nil {
		t.Fatal(err)
	}
	if got := ask(t, p.Pid, filepath.Join(dir, "report"), 1); !strings.HasPrefix(got, "ok ") {
		t.Fatalf("after a lazy restore of a chain: %s", got)
	}
}
