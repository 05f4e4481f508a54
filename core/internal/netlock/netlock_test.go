package netlock

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// A locked connection's packets do not reach it; once unlocked, they do again.
func TestLockDropsAConnection(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("nftables needs root")
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cl, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	name := NewName()
	conn := Conn{Local: netip.MustParseAddrPort(srv.LocalAddr().String()), Peer: netip.MustParseAddrPort(srv.RemoteAddr().String())}
	if err := Lock("", name, []Conn{conn}); errors.Is(err, ErrUnavailable) {
		t.Skipf("nftables cannot be used here: %v", err)
	} else if err != nil {
		t.Fatalf("lock: %v", err)
	}
	defer Unlock("", name)
	if held, err := Held(name); err != nil || !held {
		t.Fatalf("table %s held %v, %v", name, held, err)
	}
	cl.Write([]byte("x"))
	srv.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := srv.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes through the lock", n)
	}
	if err := Unlock("", name); err != nil {
		t.Fatal(err)
	}
	if held, _ := Held(name); held {
		t.Fatal("the table is still there after Unlock")
	}
	// The peer retransmits: the byte arrives.
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := srv.Read(make([]byte, 1)); err != nil || n != 1 {
		t.Fatalf("after unlock: read %d, %v", n, err)
	}
	if err := Unlock("", name); err != nil {
		t.Fatalf("unlocking twice: %v", err)
	}
}
