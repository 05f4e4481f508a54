package core_test

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/internal/testutil"
)

// Datagram, seqpacket and stream socketpairs come back with their queued messages (message
// boundaries and a shutdown kept), and a listening socket accepts a new connection.
func TestRestoreUnixSockets(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "sockets")
	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	restore(t, img)

	conn, err := net.Dial("unix", filepath.Join(dir, "sock"))
	if err != nil {
		t.Fatalf("connect to the restored listener: %v", err)
	}
	defer conn.Close()
	syscall.Kill(p.Pid, syscall.SIGUSR1)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(io.LimitReader(conn, 17))
	if string(b) != "hello from server" {
		t.Errorf("the restored server said %q", b)
	}
	report := filepath.Join(dir, "report")
	testutil.WaitFor(t, "a report", func() bool { return len(testutil.Lines(report)) > 0 })
	if got, want := testutil.Lines(report)[0], "dgram=one|two seq=seq stream=stream bytes,eof accepted=1"; got != want {
		t.Fatalf("after restore: %s, want %s", got, want)
	}
}

// Two separate trees joined by a unix stream socketpair keep talking after the restore, the
// bytes in flight intact.
func TestRestoreTwoTreesSharingASocket(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	starter := testutil.Start(t, testutil.Build(t, "pipetrees"), dir, "socket")
	if err := starter.Reap(); err != nil {
		t.Fatal(err)
	}
	var w, r int
	if _, err := fmt.Sscan(testutil.ReadFile(filepath.Join(dir, "pids")), &w, &r); err != nil {
		t.Fatal(err)
	}
	testutil.Adopt(t, w)
	testutil.Adopt(t, r)
	log := filepath.Join(dir, "read.log")
	testutil.WaitFor(t, "reader to read", func() bool { return lastInt(t, log) >= 20 })
	img := dump(t, core.Kill, w, r)
	testutil.KillAndReap(w)
	testutil.KillAndReap(r)
	at := lastInt(t, log)
	restore(t, img)
	testutil.WaitFor(t, "reader to go on", func() bool { return lastInt(t, log) >= at+50 })
	checkSequence(t, log, at+50)
}
