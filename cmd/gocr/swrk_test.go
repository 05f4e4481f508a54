package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	criu "github.com/checkpoint-restore/go-criu/v8"
	"github.com/checkpoint-restore/go-criu/v8/rpc"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/internal/testutil"
)

// stages records the notify callbacks a go-criu client gets.
type stages struct {
	criu.NoNotify
	got []string
}

func (s *stages) PreDump() error              { s.got = append(s.got, "pre-dump"); return nil }
func (s *stages) PostDump() error             { s.got = append(s.got, "post-dump"); return nil }
func (s *stages) PreRestore() error           { s.got = append(s.got, "pre-restore"); return nil }
func (s *stages) PostRestore(pid int32) error { s.got = append(s.got, "post-restore"); return nil }
func (s *stages) PostResume() error           { s.got = append(s.got, "post-resume"); return nil }
func (s *stages) take() []string              { got := s.got; s.got = nil; return got }
func imagesDir(t *testing.T, dir string) *os.File {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// go-criu, the client runc and podman's Go tooling are built on, drives gocr as it drives
// `criu swrk`: VERSION, a dump leaving the counter running, a PRE_DUMP and a final DUMP on top
// of it (parent_img, track_mem), a RESTORE; the counter goes on from where it stopped, and the
// notify callbacks come in CRIU's order. An option gocr does not handle is refused by name.
func TestSwrkGoCriu(t *testing.T) {
	testutil.RequireRoot(t)
	c := criu.MakeCriu()
	c.SetCriuPath(gocrBin)
	v, err := c.GetCriuVersion()
	if err != nil || v < 40000 {
		t.Fatalf("version %d, %v; want 4.x, as clients need", v, err)
	}
	log := filepath.Join(t.TempDir(), "count.log")
	p := testutil.Start(t, testutil.Build(t, "counter"), log)
	testutil.WaitFor(t, "counter", func() bool { return lastCount(log) >= 3 })
	base := t.TempDir()
	nfy := &stages{}
	f := imagesDir(t, filepath.Join(base, "running"))
	opts := &rpc.CriuOpts{ImagesDirFd: ptr(int32(f.Fd())), Pid: ptr(int32(p.Pid)), LeaveRunning: ptr(true), LogFile: ptr("dump.log")}
	if err := c.Dump(opts, nfy); err != nil {
		t.Fatalf("dump leaving it running: %v", err)
	}
	if got := nfy.take(); !slices.Equal(got, []string{"pre-dump", "post-dump"}) {
		t.Errorf("dump notifies %v, want pre-dump, post-dump", got)
	}
	at := lastCount(log)
	testutil.WaitFor(t, "the counter to go on", func() bool { return lastCount(log) >= at+3 })

	pre := imagesDir(t, filepath.Join(base, "pre"))
	if err := c.PreDump(&rpc.CriuOpts{ImagesDirFd: ptr(int32(pre.Fd())), Pid: ptr(int32(p.Pid)), TrackMem: ptr(true)}, nil); err != nil {
		t.Fatalf("pre-dump: %v", err)
	}
	final := imagesDir(t, filepath.Join(base, "final"))
	opts = &rpc.CriuOpts{ImagesDirFd: ptr(int32(final.Fd())), Pid: ptr(int32(p.Pid)), ParentImg: ptr("../pre"), TrackMem: ptr(true), LogFile: ptr("dump.log")}
	if err := c.Dump(opts, nfy); err != nil {
		t.Fatalf("final dump on the pre-dump: %v", err)
	}
	p.Reap()
	if b, err := os.ReadFile(filepath.Join(base, "final", "dump.log")); err != nil || !strings.Contains(string(b), "done") {
		t.Errorf("log file: %q, %v", b, err)
	}
	nfy.take()
	stopped := lastCount(log)

	// An option gocr does not take is refused by name, and nothing is made.
	bad := &rpc.CriuOpts{ImagesDirFd: ptr(int32(final.Fd())), RstSibling: ptr(true)}
	if err := c.Restore(bad, nil); err == nil || !strings.Contains(err.Error(), "rst_sibling") {
		t.Fatalf("restore with rst_sibling: %v, want a refusal naming it", err)
	}
	if testutil.Alive(p.Pid) {
		t.Fatal("the refused restore made the process")
	}
	if err := c.Restore(&rpc.CriuOpts{ImagesDirFd: ptr(int32(final.Fd()))}, nfy); err != nil {
		t.Fatalf("restore: %v", err)
	}
	testutil.Adopt(t, p.Pid) // swrk's child; ours once swrk is gone
	if got := nfy.take(); !slices.Equal(got, []string{"pre-restore", "post-restore", "post-resume"}) {
		t.Errorf("restore notifies %v, want pre-restore, post-restore, post-resume", got)
	}
	testutil.WaitFor(t, "the restored counter", func() bool { return lastCount(log) >= stopped+10 })
	for i, l := range testutil.Lines(log) {
		if n := strconv.Itoa(i + 1); l != n+" "+n {
			t.Fatalf("count.log line %d is %q: the count has a gap or a repeat", i+1, l)
		}
	}
}

// Bad requests get a criu_resp that says what is wrong, and the server goes on answering;
// when the client closes its end, swrk ends with status 0.
func TestSwrkBadRequests(t *testing.T) {
	testutil.RequireRoot(t)
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	cln, srv := os.NewFile(uintptr(fds[0]), "client"), os.NewFile(uintptr(fds[1]), "server")
	defer cln.Close()
	cmd := exec.Command(gocrBin, "swrk", "3")
	cmd.ExtraFiles = []*os.File{srv}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	ask := func(b []byte) *rpc.CriuResp {
		t.Helper()
		if _, err := cln.Write(b); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64<<10)
		n, err := cln.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		resp := &rpc.CriuResp{}
		if err := resp.UnmarshalVT(buf[:n]); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	marshal := func(r *rpc.CriuReq) []byte {
		b, err := r.MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	notDir, err := os.CreateTemp(t.TempDir(), "file")
	if err != nil {
		t.Fatal(err)
	}
	defer notDir.Close()
	for _, c := range []struct {
		what string
		req  []byte
		want string
	}{
		{"garbage", []byte{0xff, 0xff, 0xff, 0x0f}, "bad request"},
		{"an unknown request", marshal(&rpc.CriuReq{Type: rpc.CriuReqType_PAGE_SERVER.Enum()}), "PAGE_SERVER is not handled"},
		{"a dump without options", marshal(&rpc.CriuReq{Type: rpc.CriuReqType_DUMP.Enum()}), "no criu_opts"},
		{"images_dir_fd on a file", marshal(&rpc.CriuReq{Type: rpc.CriuReqType_DUMP.Enum(), Opts: &rpc.CriuOpts{ImagesDirFd: ptr(int32(notDir.Fd())), Pid: ptr(int32(os.Getpid()))}}), "is not a directory"},
		{"an option gocr does not take", marshal(&rpc.CriuReq{Type: rpc.CriuReqType_DUMP.Enum(), Opts: &rpc.CriuOpts{ImagesDirFd: ptr(int32(notDir.Fd())), LazyPages: ptr(true)}}), "lazy_pages: not handled"},
	} {
		resp := ask(c.req)
		if resp.GetSuccess() || !strings.Contains(resp.GetCrErrmsg(), c.want) {
			t.Errorf("%s: success %v, %q; want a failure saying %q", c.what, resp.GetSuccess(), resp.GetCrErrmsg(), c.want)
		}
	}
	if resp := ask(marshal(&rpc.CriuReq{Type: rpc.CriuReqType_VERSION.Enum()})); !resp.GetSuccess() || resp.GetVersion().GetMajorNumber() != 4 {
		t.Errorf("VERSION after the bad requests: %v", resp)
	}
	// FEATURE_CHECK answers truly: memory tracking as the probe finds it, no lazy pages.
	resp := ask(marshal(&rpc.CriuReq{Type: rpc.CriuReqType_FEATURE_CHECK.Enum(), Features: &rpc.CriuFeatures{MemTrack: ptr(true), LazyPages: ptr(true)}}))
	uffd := false
	for _, f := range core.Features() {
		if strings.HasPrefix(f.Name, "userfaultfd write-protect") {
			uffd = f.Present
		}
	}
	if f := resp.GetFeatures(); !resp.GetSuccess() || f.GetMemTrack() != uffd || f.GetLazyPages() || f.LazyPages == nil {
		t.Errorf("FEATURE_CHECK: %v, want mem_track %v and lazy_pages false", resp, uffd)
	}
	if resp := ask(marshal(&rpc.CriuReq{Type: rpc.CriuReqType_CHECK.Enum()})); !resp.GetSuccess() {
		t.Errorf("CHECK: %v", resp)
	}
	cln.Close()
	if err := cmd.Wait(); err != nil {
		t.Errorf("swrk after the client closed: %v, want status 0", err)
	}
}

// gocr run as criu (a link) takes CRIU's command line, as OpenJDK CRaC runs it: `criu dump -t
// PID -D DIR --shell-job -v4 -o dump4.log` into a directory that exists, its log beside the
// image; `criu restore -D DIR -d -o restore.log`; `criu --version`; `criu check`.
func TestCriuCommandLine(t *testing.T) {
	testutil.RequireRoot(t)
	link := filepath.Join(t.TempDir(), "criu")
	if err := os.Symlink(gocrBin, link); err != nil {
		t.Fatal(err)
	}
	criuRun := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(link, args...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	if out, code := criuRun("--version"); code != 0 || !strings.HasPrefix(out, "Version: 4.") {
		t.Fatalf("criu --version: %d %q", code, out)
	}
	if out, code := criuRun("check"); code != 0 {
		t.Fatalf("criu check: %d %s", code, out)
	}
	log := filepath.Join(t.TempDir(), "count.log")
	p := testutil.Start(t, testutil.Build(t, "counter"), log)
	testutil.WaitFor(t, "counter", func() bool { return lastCount(log) >= 3 })
	img := t.TempDir() // exists, as CRaC makes it
	if out, code := criuRun("dump", "--bogus", "-t", strconv.Itoa(p.Pid), "-D", img); code != 2 || !strings.Contains(out, "--bogus") {
		t.Fatalf("criu dump --bogus: %d %q, want a usage error naming it", code, out)
	}
	if out, code := criuRun("dump", "-t", strconv.Itoa(p.Pid), "-D", img, "--shell-job", "-v4", "-o", "dump4.log"); code != 0 {
		t.Fatalf("criu dump: %d %s", code, out)
	}
	p.Reap()
	stopped := lastCount(log)
	if out, code := criuRun("restore", "-D", img, "--shell-job", "-d", "-v4", "-o", "restore.log", "--pidfile", filepath.Join(img, "pid")); code != 0 {
		t.Fatalf("criu restore: %d %s", code, out)
	}
	testutil.Adopt(t, p.Pid)
	testutil.WaitFor(t, "the restored counter", func() bool { return lastCount(log) >= stopped+10 })
	for _, name := range []string{"dump4.log", "restore.log", "index.img"} {
		if st, err := os.Stat(filepath.Join(img, name)); err != nil || st.Size() == 0 {
			t.Errorf("%s in the images directory: %v", name, err)
		}
	}
}

// A process whose stdout is a pipe to its client (as a container's is to runc) is restored
// with inherit_fd: the new pipe the client hands in takes the old one's place, and the lines
// go on there, counting on.
func TestSwrkInheritFd(t *testing.T) {
	testutil.RequireRoot(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(testutil.Build(t, "ticker"))
	cmd.Stdout = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	p := &testutil.Proc{Pid: cmd.Process.Pid, Cmd: cmd}
	t.Cleanup(p.Kill)
	lines := bufio.NewScanner(r)
	last := 0
	for last < 5 && lines.Scan() {
		last, _ = strconv.Atoi(lines.Text())
	}
	key, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/1", p.Pid))
	c := criu.MakeCriu()
	c.SetCriuPath(gocrBin)
	img := imagesDir(t, filepath.Join(t.TempDir(), "img"))
	if err := c.Dump(&rpc.CriuOpts{ImagesDirFd: ptr(int32(img.Fd())), Pid: ptr(int32(p.Pid))}, nil); err != nil {
		t.Fatalf("dump: %v", err)
	}
	p.Reap()
	for lines.Scan() { // what was written before the dump
		last, _ = strconv.Atoi(lines.Text())
	}
	r2, w2, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	c.AddInheritFd(key, w2)
	if err := c.Restore(&rpc.CriuOpts{ImagesDirFd: ptr(int32(img.Fd()))}, nil); err != nil {
		t.Fatalf("restore with inherit_fd %s: %v", key, err)
	}
	testutil.Adopt(t, p.Pid)
	w2.Close()
	lines = bufio.NewScanner(r2)
	if !lines.Scan() {
		t.Fatal("nothing on the new pipe")
	}
	if n, _ := strconv.Atoi(lines.Text()); n != last+1 {
		t.Fatalf("the first line on the new pipe is %q, want %d (the count goes on)", lines.Text(), last+1)
	}
}

// `criu restore ... --exec-cmd -- CMD`, as CRaC restores: once the tree runs, gocr execs CMD
// in its place, and CMD, the root's parent, reaps it.
func TestCriuRestoreExecCmd(t *testing.T) {
	testutil.RequireRoot(t)
	link := filepath.Join(t.TempDir(), "criu")
	if err := os.Symlink(gocrBin, link); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(t.TempDir(), "count.log")
	p := testutil.Start(t, testutil.Build(t, "counter"), log)
	testutil.WaitFor(t, "counter", func() bool { return lastCount(log) >= 3 })
	img := t.TempDir()
	if out, err := exec.Command(link, "dump", "-t", strconv.Itoa(p.Pid), "-D", img, "-o", "dump.log").CombinedOutput(); err != nil {
		t.Fatalf("criu dump: %v %s", err, out)
	}
	p.Reap()
	at := lastCount(log)
	reaped := filepath.Join(t.TempDir(), "reaped")
	cmd := exec.Command(link, "restore", "-D", img, "-v1", "--exec-cmd", "--", testutil.Build(t, "reaper"), reaped)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the restored counter", func() bool { return lastCount(log) > at })
	if ppid, _, _, _ := testutil.Stat(p.Pid); ppid != cmd.Process.Pid {
		t.Fatalf("the restored root's parent is %d, want %d (the exec'd command)", ppid, cmd.Process.Pid)
	}
	syscall.Kill(p.Pid, syscall.SIGKILL)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the exec'd command: %v", err)
	}
	if got, want := strings.TrimSpace(testutil.ReadFile(reaped)), fmt.Sprintf("%d 137", p.Pid); got != want {
		t.Fatalf("the exec'd command reaped %q, want %q", got, want)
	}
}
