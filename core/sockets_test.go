package core_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/netlock"
	"github.com/gocr/gocr/internal/testutil"
)

// Datagram, seqpacket and stream socketpairs come back with their queued messages (message
// boundaries and a shutdown kept), and a listening socket accepts a new connection.
func TestRestoreUnixSockets(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "sockets")
	// A first dump that leaves it running must leave every queued message in place (peeked,
	// not taken) for the second one to find.
	dump(t, core.LeaveRunning, p.Pid)
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

// freePort returns a loopback TCP port that is free now.
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// python3 -m http.server on a loopback port serves a page before the dump and after the
// restore, from the restored listening socket.
func TestRestorePythonHTTPServer(t *testing.T) {
	testutil.RequireRoot(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed (CI installs it): %v", err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "page.txt"), []byte("served by gocr's restored python\n"), 0o644)
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/page.txt", port)
	cmd := exec.Command(py, "-m", "http.server", "--bind", "127.0.0.1", "--directory", dir, fmt.Sprint(port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &testutil.Proc{Pid: cmd.Process.Pid, Cmd: cmd}
	t.Cleanup(p.Kill)
	var before string
	testutil.WaitFor(t, "http.server to answer", func() bool { before, err = httpGet(url); return err == nil })
	// Until both sides have closed our connection, it holds the port (and it is no
	// listening, bound or established socket, which is all this test is about).
	testutil.WaitFor(t, "idle server", func() bool { return len(tcpConns(p.Pid)) == 0 && !portBusy(port) })
	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	if _, err := httpGet(url); err == nil {
		t.Fatal("the server still answers after the dump killed it")
	}
	restore(t, img)
	after, err := httpGet(url)
	if err != nil || after != before {
		t.Fatalf("after restore: %q, %v; before: %q", after, err, before)
	}
}

// redis-server holding a few thousand keys answers the same GETs after the restore, and new
// writes work.
func TestRestoreRedis(t *testing.T) {
	testutil.RequireRoot(t)
	srv, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is needed (CI installs it with apt-get install redis-server): %v", err)
	}
	port := freePort(t)
	dir := t.TempDir()
	cmd := exec.Command(srv, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &testutil.Proc{Pid: cmd.Process.Pid, Cmd: cmd}
	t.Cleanup(p.Kill)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var c *redisConn
	testutil.WaitFor(t, "redis to answer", func() bool { c, err = dialRedis(addr); return err == nil })
	for i := 0; i < 3000; i++ {
		if got := c.do(t, "SET", fmt.Sprintf("key:%d", i), fmt.Sprintf("value-%d", i*i)); got != "+OK" {
			t.Fatalf("SET: %s", got)
		}
	}
	c.close()
	// The client has gone: redis holds its listener, epoll, pipes and threads, no connection.
	testutil.WaitFor(t, "redis to drop the client", func() bool { return len(tcpConns(p.Pid)) == 0 })
	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	restore(t, img)

	c, err = dialRedis(addr)
	if err != nil {
		t.Fatalf("connect to the restored redis: %v", err)
	}
	defer c.close()
	for _, i := range []int{0, 1, 1234, 2999} {
		if got, want := c.do(t, "GET", fmt.Sprintf("key:%d", i)), fmt.Sprintf("value-%d", i*i); got != want {
			t.Fatalf("GET key:%d after restore: %q, want %q", i, got, want)
		}
	}
	if got := c.do(t, "DBSIZE"); got != ":3000" {
		t.Fatalf("DBSIZE after restore: %s", got)
	}
	if got := c.do(t, "SET", "new", "write"); got != "+OK" {
		t.Fatalf("SET after restore: %s", got)
	}
	if got := c.do(t, "GET", "new"); got != "write" {
		t.Fatalf("GET new: %s", got)
	}
}

// tcpConns lists the TCP sockets of pid that are connections (not listeners).
// socketProtocols lists SO_PROTOCOL of every inet socket of pid (through dups of its fds).
func socketProtocols(t *testing.T, pid int) []int {
	t.Helper()
	pidfd, err := linux.PidfdOpen(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer linux.Close(pidfd)
	var out []int
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); !strings.HasPrefix(l, "socket:[") {
			continue
		}
		n, _ := strconv.Atoi(e.Name())
		dup, err := linux.PidfdGetfd(pidfd, n)
		if err != nil {
			continue
		}
		if s, err := linux.InspectInet(dup); err == nil {
			out = append(out, s.Protocol)
		}
		linux.Close(dup)
	}
	return out
}

// portBusy says whether a TCP socket on port other than a listener or one in TIME_WAIT is
// there (FIN_WAIT, CLOSE_WAIT...): a listener's bind on the port would fail.
func portBusy(port int) bool {
	for _, tbl := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		for _, line := range testutil.Lines(tbl) {
			f := strings.Fields(line)
			if len(f) > 3 && strings.HasSuffix(f[1], fmt.Sprintf(":%04X", port)) && f[3] != "0A" && f[3] != "06" {
				return true
			}
		}
	}
	return false
}

func tcpConns(pid int) []string {
	var out []string
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if !strings.HasPrefix(l, "socket:[") {
			continue
		}
		ino := strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")
		for _, tbl := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
			for _, line := range testutil.Lines(tbl) {
				f := strings.Fields(line)
				if len(f) > 9 && f[9] == ino && f[3] != "0A" { // 0A: LISTEN
					out = append(out, line)
				}
			}
		}
	}
	return out
}

// redisConn speaks just enough RESP for the test.
type redisConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialRedis(addr string) (*redisConn, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	rc := &redisConn{c: c, r: bufio.NewReader(c)}
	if _, err := fmt.Fprintf(c, "*1\r\n$4\r\nPING\r\n"); err != nil {
		c.Close()
		return nil, err
	}
	if l, err := rc.r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "+PONG") {
		c.Close()
		return nil, fmt.Errorf("PING: %q %v", l, err)
	}
	return rc, nil
}

func (rc *redisConn) close() { rc.c.Close() }

// do sends a command and returns a simple reply: "+OK", ":3000", or a bulk string's value.
func (rc *redisConn) do(t *testing.T, args ...string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := rc.c.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	l, err := rc.r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	l = strings.TrimRight(l, "\r\n")
	if !strings.HasPrefix(l, "$") {
		return l
	}
	var n int
	fmt.Sscan(l[1:], &n)
	if n < 0 {
		return "(nil)"
	}
	buf := make([]byte, n+2)
	if _, err := io.ReadFull(rc.r, buf); err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// A parent and child talking over TCP loopback (both ends in the tree) go on talking after a
// dump that leaves them running, and after a restore: the bytes in flight arrive in order,
// none lost or doubled.
func TestRestoreTCPEstablished(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	p := testutil.Start(t, testutil.Build(t, "tcppair"), dir)
	log := filepath.Join(dir, "read.log")
	testutil.WaitFor(t, "reader to read", func() bool { return lastInt(t, log) >= 30 })
	// A dump that lets the tree go on must give it back its connections working.
	dump(t, core.LeaveRunning, p.Pid)
	running(t, p.Pid, log)
	img := dumpTree(t, p)
	at := lastInt(t, log)
	restore(t, img)
	testutil.WaitFor(t, "reader to go on", func() bool { return lastInt(t, log) >= at+100 })
	checkSequence(t, log, at+100)
}

// A Go HTTP server (goroutines, runtime threads, netpoller) answers after the restore with
// the state it had: its request counter goes on.
func TestRestoreGoHTTPServer(t *testing.T) {
	testutil.RequireRoot(t)
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p := testutil.Start(t, testutil.BuildGo(t, "gohttp"), addr)
	url := "http://" + addr + "/count"
	get := func() (int, int, error) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(url)
		if err != nil {
			return 0, 0, err
		}
		defer resp.Body.Close()
		var n, ticks int
		_, err = fmt.Fscan(resp.Body, &n, &ticks)
		return n, ticks, err
	}
	var err error
	testutil.WaitFor(t, "the Go server to answer", func() bool { _, _, err = get(); return err == nil })
	for i := 0; i < 4; i++ {
		get()
	}
	// Built as a module with today's Go, the server listens with multipath TCP.
	if protos := socketProtocols(t, p.Pid); !slices.Contains(protos, linux.IPProtoMPTCP) {
		t.Fatalf("the Go server's sockets have protocols %v: no multipath TCP listener (built with old defaults?)", protos)
	}
	// Wait until the server has closed its side of our connections.
	testutil.WaitFor(t, "idle server", func() bool { return len(tcpConns(p.Pid)) == 0 })
	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	restore(t, img)
	n, ticks, err := get()
	if err != nil || n != 6 {
		t.Fatalf("after restore: request %d, %v; want request 6", n, err)
	}
	if protos := socketProtocols(t, p.Pid); !slices.Contains(protos, linux.IPProtoMPTCP) {
		t.Fatalf("the restored server's sockets have protocols %v: its listener is no longer multipath TCP", protos)
	}
	time.Sleep(50 * time.Millisecond)
	_, ticks2, _ := get()
	if ticks2 <= ticks {
		t.Fatalf("the background goroutine stopped: %d then %d ticks", ticks, ticks2)
	}
}

// With TCPEstablished, a client's connection to redis survives the checkpoint: the client
// (this test, outside the tree) keeps its socket, and the same connection answers after the
// restore, as CRIU users know --tcp-established.
func TestRestoreRedisKeepsClientConnection(t *testing.T) {
	testutil.RequireRoot(t)
	srv, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is needed (CI installs it with apt-get install redis-server): %v", err)
	}
	port := freePort(t)
	cmd := exec.Command(srv, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &testutil.Proc{Pid: cmd.Process.Pid, Cmd: cmd}
	t.Cleanup(p.Kill)
	var c *redisConn
	testutil.WaitFor(t, "redis to answer", func() bool { c, err = dialRedis(fmt.Sprintf("127.0.0.1:%d", port)); return err == nil })
	defer c.close()
	if got := c.do(t, "SET", "k", "before"); got != "+OK" {
		t.Fatal(got)
	}
	// Without the flag, a connection to a peer outside is refused by name; redis goes on.
	_, err = core.Dump(t.Context(), core.DumpOptions{Roots: []int{p.Pid}, Dir: filepath.Join(t.TempDir(), "img")})
	if !errors.Is(err, core.ErrUnsupported) || !strings.Contains(err.Error(), "--tcp-established") {
		t.Fatalf("got %v, want a refusal naming --tcp-established", err)
	}
	if got := c.do(t, "GET", "k"); got != "before" {
		t.Fatalf("redis after the refused dump: %q", got)
	}
	img := filepath.Join(t.TempDir(), "img")
	if _, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img, TCPEstablished: true}); err != nil {
		t.Fatal(err)
	}
	waitReaped(t, p)
	// Until the restore, a network lock keeps the client's packets (its delayed ACK, say)
	// from meeting no socket and drawing a reset that would end the connection.
	ck, err := image.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	lock := ck.Tree.NetLock
	if lock == "" {
		// Only where nftables cannot be used: the dump said so, and the test goes on.
		t.Log("no network lock: nftables is not available here")
	} else if held, err := netlock.Held(lock); err != nil || !held {
		t.Fatalf("network lock %q held: %v, %v", lock, held, err)
	}
	restore(t, img)
	if held, _ := netlock.Held(lock); lock != "" && held {
		t.Errorf("network lock %s still there after the restore", lock)
	}
	// The same connection, no reconnect.
	if got := c.do(t, "GET", "k"); got != "before" {
		t.Fatalf("GET on the kept connection: %q", got)
	}
	if got := c.do(t, "SET", "k", "after"); got != "+OK" {
		t.Fatalf("SET on the kept connection: %q", got)
	}
	if got := c.do(t, "GET", "k"); got != "after" {
		t.Fatalf("GET: %q", got)
	}
}

// Unix sockets in the states plain pairs do not cover come back working: a stream socket
// whose peer closed gives its last bytes and then end-of-file; a bound datagram socket keeps
// the datagrams another socket, connected one way to it, sent, and that one still reaches it;
// a datagram socket connected to a socket outside the tree (as syslog's is to /dev/log)
// still sends there.
func TestRestoreUnixSocketEdges(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	ext, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "ext"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	p := testutil.Start(t, testutil.Build(t, "unixedge"), dir)
	testutil.WaitFor(t, "unixedge to be ready", func() bool { _, err := os.Stat(filepath.Join(dir, "ready")); return err == nil })
	if got, want := restoreAndAsk(t, p, dir), "pair=bye eof=0 srv=m1,m2,m3"; got != want {
		t.Errorf("after restore: %s, want %s", got, want)
	}
	ext.SetDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 64)
	n, err := ext.Read(b)
	if err != nil || string(b[:n]) != "hello-ext" {
		t.Errorf("the socket outside got %q, %v; want hello-ext", b[:n], err)
	}
}

// A netlink socket comes back bound to the same port id, in the same multicast groups, and
// answers a request.
func TestRestoreNetlinkSocket(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "netlinker")
	got := restoreAndAsk(t, p, dir)
	var groups string
	var links int
	if _, err := fmt.Sscanf(got, "portid=same groups=%s links=%d", &groups, &links); err != nil || groups != "0x51" || links < 1 {
		t.Fatalf("after restore: %s, want portid=same groups=0x51 (groups 1, 5 and 7) and at least one link", got)
	}
}

// Listeners with connections not accepted yet are refused by name; with SkipInFlight they
// are dumped without them (those clients see the connection end), and the restored server
// accepts new ones.
func TestDumpSkipInFlight(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "listener")
	port := strings.TrimSpace(testutil.ReadFile(filepath.Join(dir, "port")))
	tcp, err := net.Dial("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	unixc, err := net.Dial("unix", filepath.Join(dir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer unixc.Close()
	_, err = core.Dump(t.Context(), core.DumpOptions{Roots: []int{p.Pid}, Dir: filepath.Join(t.TempDir(), "img")})
	if !errors.Is(err, core.ErrUnsupported) || !strings.Contains(err.Error(), "not accepted yet") || !strings.Contains(err.Error(), "--skip-in-flight") {
		t.Fatalf("dump with connections in flight: %v", err)
	}
	img := filepath.Join(t.TempDir(), "img")
	if _, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img, SkipInFlight: true}); err != nil {
		t.Fatal(err)
	}
	waitReaped(t, p)
	restore(t, img)
	// The clients in flight were dropped with the old server.
	tcp.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := tcp.Read(make([]byte, 1)); err == nil {
		t.Error("the TCP client in flight still reads")
	}
	// New clients are accepted by the restored server.
	tcp2, err := net.Dial("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer tcp2.Close()
	unix2, err := net.Dial("unix", filepath.Join(dir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer unix2.Close()
	tcp2.Write([]byte("after-tcp\n"))
	unix2.Write([]byte("after-unix\n"))
	syscall.Kill(p.Pid, syscall.SIGUSR1)
	report := filepath.Join(dir, "report")
	testutil.WaitFor(t, "a report", func() bool { return len(testutil.Lines(report)) > 0 })
	if got, want := testutil.Lines(report)[0], "tcp=after-tcp unix=after-unix"; got != want {
		t.Fatalf("after restore: %s, want %s", got, want)
	}
}

// python3 -m http.server logging to a pipe read outside the dumped tree (`... 2>&1 | cat`):
// the dump warns of the pipe by name, and a restore given a new pipe's write end for it with
// InheritFds (--inherit-fd fd[N]:pipe:[INODE]) has the restored server log its requests there.
func TestRestorePipeToOutside(t *testing.T) {
	testutil.RequireRoot(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed (CI installs it): %v", err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "page.txt"), []byte("hello\n"), 0o644)
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/page.txt", port)
	logR, logW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer logR.Close()
	cmd := exec.Command(py, "-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory", dir, fmt.Sprint(port))
	cmd.Stderr = logW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logW.Close()
	p := &testutil.Proc{Pid: cmd.Process.Pid, Cmd: cmd}
	t.Cleanup(p.Kill)
	testutil.WaitFor(t, "http.server to answer", func() bool { _, err := httpGet(url); return err == nil })
	testutil.WaitFor(t, "idle server", func() bool { return len(tcpConns(p.Pid)) == 0 && !portBusy(port) })
	link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/2", p.Pid))
	if !strings.HasPrefix(link, "pipe:[") {
		t.Fatalf("the server's stderr is %q, want a pipe", link)
	}
	img := filepath.Join(t.TempDir(), "img")
	st, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	if w := strings.Join(st.Warnings, "\n"); !strings.Contains(w, link) || !strings.Contains(w, "--inherit-fd") {
		t.Fatalf("dump warnings %q: want %s named with --inherit-fd", st.Warnings, link)
	}
	waitReaped(t, p)
	newR, newW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer newR.Close()
	res, err := core.Restore(context.Background(), core.RestoreOptions{Dir: img, InheritFds: map[string]int{link: int(newW.Fd())}})
	newW.Close()
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	for _, pid := range res.Pids {
		testutil.Adopt(t, pid)
	}
	if _, err := httpGet(url); err != nil {
		t.Fatalf("after restore: %v", err)
	}
	newR.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(newR).ReadString('\n')
	if err != nil || !strings.Contains(line, "GET /page.txt") {
		t.Fatalf("the restored server logged %q (%v) to the inherited pipe, want its request", line, err)
	}
}

// A file whose O_ASYNC signals go to a process outside the dumped tree is refused by name at
// dump (the restore could not name that process), and the tree goes on.
func TestDumpRefusesAnOwnerOutside(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "sigio", "outside")
	refusedAtDump(t, p.Pid, p.Pid, fmt.Sprintf("O_ASYNC signals go to %d, outside the dumped trees", os.Getpid()))
	if got := ask(t, p.Pid, filepath.Join(dir, "report"), 1); got != "ok" {
		t.Fatalf("after the refused dump: %s", got)
	}
}

// A TCP socket whose connection was reset, still open in the process, would come back as a
// socket that was never connected: the dump refuses it by name and the process goes on.
func TestDumpRefusesAnEndedTCPConnection(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "tcpended")
	refusedAtDump(t, p.Pid, p.Pid, "whose connection has ended")
	running(t, p.Pid, filepath.Join(dir, "count.log"))
}

// A socket with an eBPF filter (SO_ATTACH_BPF) cannot be read back: the dump refuses it by
// name and the process goes on.
func TestDumpRefusesAnEBPFSocketFilter(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "bpffilter")
	refusedAtDump(t, p.Pid, p.Pid, "eBPF filter")
	running(t, p.Pid, filepath.Join(dir, "count.log"))
}

// Fds in flight on a stream socket are refused by name: the kernel does not show where in the
// byte stream they were sent (a peek gives them with the bytes before too), and a read must
// get them with their own bytes. The process goes on.
func TestDumpRefusesFdsInFlightOnAStream(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "scmrights", "stream")
	refusedAtDump(t, p.Pid, p.Pid, "unix stream socket")
	if got := ask(t, p.Pid, filepath.Join(dir, "report"), 1); got != "ok" {
		t.Fatalf("after the refused dump: %s", got)
	}
}

// A TCP connect in progress (SYN_SENT, to a server whose accept queue is full) comes back
// connecting, from the same local port: once the server has room, the connection is made.
func TestRestoreConnectInProgress(t *testing.T) {
	testutil.RequireRoot(t)
	l, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(l)
	if err := syscall.Bind(l, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(l, 0); err != nil { // room for one connection not accepted
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(l)
	port := sa.(*syscall.SockaddrInet4).Port
	filler, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer filler.Close()
	p, dir := testutil.StartReady(t, "synsent", strconv.Itoa(port))
	report := filepath.Join(dir, "report")
	askTwice(t, p, report, 0)
	// Room in the server's queue: the restored socket's next SYN gets through.
	a, _, err := syscall.Accept(l)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(a)
	os.WriteFile(filepath.Join(dir, "expect-connected"), nil, 0o644)
	if got := ask(t, p.Pid, report, 3); got != "ok" {
		t.Fatalf("once the server had room: %s", got)
	}
}

// A half-closed TCP connection whose other end is outside the tree (this end shut down for
// writing, FIN_WAIT2) is refused by name without TCPEstablished, the process going on; with
// it, it comes back in FIN_WAIT2 (its FIN sent again, which the peer acknowledges again).
func TestHalfClosedTCPToOutside(t *testing.T) {
	testutil.RequireRoot(t)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	conns := make(chan net.Conn, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			conns <- c
			io.Copy(io.Discard, c) // to its end-of-file; the connection stays open
		}
	}()
	p, dir := testutil.StartReady(t, "tcphalf", strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	defer func() { (<-conns).Close() }()
	refusedAtDump(t, p.Pid, p.Pid, "with its other end outside the dumped trees")
	report := filepath.Join(dir, "report")
	if got := ask(t, p.Pid, report, 1); got != "ok" {
		t.Fatalf("after the refused dump: %s", got)
	}
	img := filepath.Join(t.TempDir(), "img")
	if _, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img, TCPEstablished: true}); err != nil {
		t.Fatalf("dump with TCPEstablished: %v", err)
	}
	waitReaped(t, p)
	restore(t, img)
	if got := ask(t, p.Pid, report, 2); got != "ok" {
		t.Fatalf("after the restore: %s", got)
	}
}

// A server holding a connection its client closed (CLOSE_WAIT, the client outside the tree,
// --tcp-established), over IPv4 and IPv6, comes back in CLOSE_WAIT: end-of-file again, and
// what it sends still reaches the client, whose reading side is open (its FIN is made again
// from a raw socket).
func TestRestoreCloseWaitToOutside(t *testing.T) {
	testutil.RequireRoot(t)
	for _, c := range []struct{ name, network, host, arg string }{{"IPv4", "tcp4", "127.0.0.1", "4"}, {"IPv6", "tcp6", "[::1]", "6"}} {
		t.Run(c.name, func(t *testing.T) {
			if c.arg == "6" {
				if l, err := net.Listen("tcp6", "[::1]:0"); err != nil {
					t.Skipf("no IPv6 loopback here: %v", err)
				} else {
					l.Close()
				}
			}
			dir := t.TempDir()
			p := testutil.Start(t, testutil.Build(t, "closewait"), dir, c.arg)
			testutil.WaitFor(t, "the port", func() bool { return len(testutil.Lines(filepath.Join(dir, "port"))) > 0 })
			conn, err := net.Dial(c.network, c.host+":"+testutil.Lines(filepath.Join(dir, "port"))[0])
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.(*net.TCPConn).CloseWrite()
			testutil.WaitFor(t, "closewait to be ready", func() bool { _, err := os.Stat(filepath.Join(dir, "ready")); return err == nil })
			lines := bufio.NewScanner(conn)
			conn.SetDeadline(time.Now().Add(20 * time.Second))
			report := filepath.Join(dir, "report")
			check := func(n int, stage string) {
				t.Helper()
				if got := ask(t, p.Pid, report, n); got != "ok" {
					t.Fatalf("%s: %s", stage, got)
				}
				if !lines.Scan() || lines.Text() != "after" {
					t.Fatalf("%s: the client read %q, %v", stage, lines.Text(), lines.Err())
				}
			}
			opts := core.DumpOptions{Roots: []int{p.Pid}, Dir: filepath.Join(t.TempDir(), "running"), TCPEstablished: true, Final: core.LeaveRunning}
			if _, err := core.Dump(t.Context(), opts); err != nil {
				t.Fatalf("dump leaving it running: %v", err)
			}
			check(1, "after a dump leaving it running")
			opts.Dir, opts.Final = filepath.Join(t.TempDir(), "img"), core.Kill
			if _, err := core.Dump(t.Context(), opts); err != nil {
				t.Fatalf("dump: %v", err)
			}
			waitReaped(t, p)
			restore(t, opts.Dir)
			check(2, "after the restore")
		})
	}
}
