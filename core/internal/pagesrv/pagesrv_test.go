package pagesrv

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gocr/gocr/core/image"
)

var token = []byte("the token of these tests, 32 b..")

// receiveFrom runs Serve (push) against a client that proves the token and then sends frames.
func receiveFrom(t *testing.T, frames []byte) (error, string) {
	t.Helper()
	srv, cli := tcpPair(t)
	dir := filepath.Join(t.TempDir(), "img")
	done := make(chan error, 1)
	go func() { done <- Serve(srv, token, dir) }()
	if err := clientHello(cli, token); err != nil {
		t.Fatalf("hello: %v", err)
	}
	go func() {
		cli.Write(append([]byte{'P'}, frames...))
		cli.(*net.TCPConn).CloseWrite() // all is sent
		buf := make([]byte, 4096)
		for {
			if _, err := cli.Read(buf); err != nil {
				return
			}
		}
	}()
	err := <-done
	cli.Close()
	return err, dir
}

func frame(kind byte, parts ...any) []byte {
	b := []byte{kind}
	for _, p := range parts {
		switch v := p.(type) {
		case uint32:
			b = binary.BigEndian.AppendUint32(b, v)
		case uint16:
			b = binary.BigEndian.AppendUint16(b, v)
		case string:
			b = append(b, v...)
		case []byte:
			b = append(b, v...)
		}
	}
	return b
}

func cat(fs ...[]byte) []byte {
	var out []byte
	for _, f := range fs {
		out = append(out, f...)
	}
	return out
}

// A client that holds the token but sends a bad image is refused, and nothing is left.
func TestReceiveRefusesBadImages(t *testing.T) {
	for _, c := range []struct {
		what   string
		frames []byte
		want   string
	}{
		{"a name leaving the directory", frame('C', uint32(1), uint16(5), "../x1"), "bad file"},
		{"data for no file", frame('D', uint32(9), uint32(3), "abc"), "bad data frame"},
		{"a frame too large", cat(frame('C', uint32(1), uint16(11), "pages-1.img"), frame('D', uint32(1), uint32(MaxFrame+1))), "bad data frame"},
		{"an unknown frame", frame('Z'), "unknown kind"},
		{"no commit", frame('C', uint32(1), uint16(11), "pages-1.img"), "no commit"},
		{"an index that is not one", cat(frame('C', uint32(1), uint16(11), "pages-1.img"), frame('I', uint32(4), "junk")), "index"},
		{"the index sent as a file", frame('C', uint32(1), uint16(9), "index.img"), "index as a file"},
	} {
		err, dir := receiveFrom(t, c.frames)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.what, err, c.want)
		}
		if _, err := image.Open(dir); !errors.Is(err, image.ErrNoImage) {
			t.Errorf("%s: an image was left: %v", c.what, err)
		}
		if ents, _ := os.ReadDir(filepath.Dir(dir)); len(ents) != 0 {
			t.Errorf("%s: left %v", c.what, ents)
		}
	}
}

// A peer without the token is refused before anything is written.
func TestReceiveRefusesWrongToken(t *testing.T) {
	srv, cli := tcpPair(t)
	done := make(chan error, 1)
	go func() { done <- Serve(srv, token, filepath.Join(t.TempDir(), "img")) }()
	if err := clientHello(cli, []byte("some other token, long enough..")); !errors.Is(err, ErrAuth) {
		t.Errorf("client with another token: %v, want ErrAuth", err)
	}
	cli.Close()
	if err := <-done; !errors.Is(err, ErrAuth) {
		t.Errorf("server: %v, want ErrAuth", err)
	}
}

// tcpPair is a connected pair of loopback TCP sockets (buffered, unlike net.Pipe).
func tcpPair(t *testing.T) (srv, cli net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		got <- c
	}()
	if cli, err = net.Dial("tcp", ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	return <-got, cli
}

// FuzzReceive feeds arbitrary frames from an authenticated client: the page server must
// refuse or commit a checked image, never panic, hang or write outside its directory.
func FuzzReceive(f *testing.F) {
	f.Add(frame('C', uint32(1), uint16(11), "pages-1.img"))
	f.Add(cat(frame('C', uint32(1), uint16(11), "pages-1.img"), frame('D', uint32(1), uint32(3), "abc"), frame('I', uint32(2), "\x08\x01")))
	f.Fuzz(func(t *testing.T, frames []byte) {
		err, dir := receiveFrom(t, frames)
		if err == nil {
			if _, err := image.Open(dir); err != nil {
				t.Fatalf("committed an image that does not open: %v", err)
			}
		}
		ents, _ := os.ReadDir(filepath.Dir(dir))
		for _, e := range ents {
			if e.Name() != filepath.Base(dir) {
				t.Fatalf("left %s beside the image directory", e.Name())
			}
		}
	})
}
