package core_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/internal/testutil"
)

var pageToken = []byte("a token of the test, 32 bytes..!")

// servePages runs a page server on loopback into dir; it returns its address and what
// ServePages returned, once it has.
func servePages(t *testing.T, dir string, wrap func(net.Listener) net.Listener) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var l net.Listener = ln
	if wrap != nil {
		l = wrap(ln)
	}
	done := make(chan error, 1)
	go func() { done <- core.ServePages(ctx, core.PageServerOptions{Listener: l, Dir: dir, Token: pageToken}) }()
	return ln.Addr().String(), done
}

// A dump sent to a page server over loopback: peers without the token are refused first
// (the server waits on), the image arrives whole and restores, the process checking all its
// memory.
func TestPageServer(t *testing.T) {
	testutil.RequireRoot(t)
	dst := filepath.Join(t.TempDir(), "dst")
	addr, done := servePages(t, dst, nil)
	// A client with another token, and one that speaks something else: both refused.
	p, dir := testutil.StartReady(t, "incr")
	_, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{p.Pid}, Final: core.LeaveRunning, PageServer: addr, PageServerToken: []byte("another token, just as long....")})
	if err == nil || !strings.Contains(err.Error(), "not the expected one") || !testutil.Alive(p.Pid) {
		t.Fatalf("dump to a page server with another token: %v (alive %v), want a refusal and the tree running", err, testutil.Alive(p.Pid))
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		c.Close()
	}
	if _, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{p.Pid}, PageServer: addr, PageServerToken: pageToken}); err != nil {
		t.Fatalf("dump to the page server: %v", err)
	}
	waitReaped(t, p)
	if err := <-done; err != nil {
		t.Fatalf("page server: %v", err)
	}
	restore(t, dst)
	if got := ask(t, p.Pid, filepath.Join(dir, "report"), 1); !strings.HasPrefix(got, "ok ") {
		t.Fatalf("after the restore of the image the page server received: %s", got)
	}
}

// cutConn fails its reads after limit bytes: a page server that dies mid-way.
type cutConn struct {
	net.Conn
	left int
}

func (c *cutConn) Read(b []byte) (int, error) {
	if c.left <= 0 {
		c.Conn.Close()
		return 0, errors.New("cut")
	}
	n, err := c.Conn.Read(b[:min(len(b), c.left)])
	c.left -= n
	return n, err
}

type cutListener struct{ net.Listener }

func (l cutListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &cutConn{Conn: c, left: 1 << 20}, nil
}

// A page server that dies while the image comes: the dump fails saying so, the tree goes
// on as it was, and neither side keeps an image.
func TestPageServerDiesMidway(t *testing.T) {
	testutil.RequireRoot(t)
	dst := filepath.Join(t.TempDir(), "dst")
	addr, done := servePages(t, dst, func(l net.Listener) net.Listener { return cutListener{l} })
	p, dir := testutil.StartReady(t, "incr")
	local := filepath.Join(t.TempDir(), "local")
	_, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{p.Pid}, Dir: local, PageServer: addr, PageServerToken: pageToken})
	if err == nil || !strings.Contains(err.Error(), "page server") || !strings.Contains(err.Error(), "goes on running") {
		t.Fatalf("dump to a page server that dies: %v", err)
	}
	if err := <-done; err == nil {
		t.Fatal("the page server cut mid-way says it received an image")
	}
	if _, err := image.Open(dst); !errors.Is(err, image.ErrNoImage) {
		t.Errorf("the page server left an image: %v", err)
	}
	if _, err := os.Stat(local); !os.IsNotExist(err) {
		t.Errorf("the failed dump left its local image: %v", err)
	}
	if got := ask(t, p.Pid, filepath.Join(dir, "report"), 1); !strings.HasPrefix(got, "ok ") {
		t.Fatalf("after the failed dump the process says %s", got)
	}
}
