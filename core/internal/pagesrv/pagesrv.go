// Package pagesrv moves images between machines: a page server receives an image a dump
// pushes to it and writes it into its images directory, whole or not at all.
//
// The protocol runs over TCP. Both sides prove they hold the same secret token before
// anything else (HMAC-SHA256 challenges, both ways), then the client sends frames:
//
//	'C' u32 id, u16 n, name[n]     create image file name as file id
//	'D' u32 id, u32 n, data[n]     append data (n <= MaxFrame) to file id
//	'I' u32 n, index[n]            the image's index: commit
//
// and the server answers the commit with 'K', or 'E' u32 n, message[n]. Every count is
// bounded, every name is checked as an image file name, and the committed image is checked
// whole (sizes and checksums of every file) before it appears. The link is authenticated,
// not encrypted.
package pagesrv

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/gocr/gocr/core/image"
)

const (
	magic = "GOCRPS1\n"
	// MaxFrame bounds a data frame; MaxIndex the index; MaxFiles the files of an image.
	MaxFrame = 4 << 20
	MaxIndex = 64 << 20
	MaxFiles = 1 << 16
	// handshakeTimeout bounds the exchange of proofs: a peer that says nothing is dropped.
	handshakeTimeout = 10 * time.Second
)

// ErrAuth is a peer that does not hold the token (or does not speak the protocol).
var ErrAuth = errors.New("page server: the peer is not the expected one (wrong token or protocol)")

func proof(token []byte, role string, a, b []byte) []byte {
	m := hmac.New(sha256.New, token)
	m.Write([]byte(role))
	m.Write(a)
	m.Write(b)
	return m.Sum(nil)
}

// serverHello and clientHello prove each side to the other.
func serverHello(c net.Conn, token []byte) error {
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	defer c.SetDeadline(time.Time{})
	ns := make([]byte, 32)
	rand.Read(ns)
	if _, err := c.Write(append([]byte(magic), ns...)); err != nil {
		return err
	}
	in := make([]byte, len(magic)+32+32)
	if _, err := io.ReadFull(c, in); err != nil || string(in[:len(magic)]) != magic {
		return ErrAuth
	}
	nc, got := in[len(magic):len(magic)+32], in[len(magic)+32:]
	if !hmac.Equal(got, proof(token, "client", ns, nc)) {
		return ErrAuth
	}
	_, err := c.Write(proof(token, "server", nc, ns))
	return err
}

func clientHello(c net.Conn, token []byte) error {
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	defer c.SetDeadline(time.Time{})
	in := make([]byte, len(magic)+32)
	if _, err := io.ReadFull(c, in); err != nil || string(in[:len(magic)]) != magic {
		return ErrAuth
	}
	ns := in[len(magic):]
	nc := make([]byte, 32)
	rand.Read(nc)
	out := append([]byte(magic), nc...)
	if _, err := c.Write(append(out, proof(token, "client", ns, nc)...)); err != nil {
		return err
	}
	got := make([]byte, 32)
	if _, err := io.ReadFull(c, got); err != nil || !hmac.Equal(got, proof(token, "server", nc, ns)) {
		return ErrAuth
	}
	return nil
}

// Serve serves one connection: it authenticates the peer, then, as it asks, writes the
// image it sends into dir (which must not hold one), whole or not at all, or serves the
// image in dir to a lazy restore.
func Serve(c net.Conn, token []byte, dir string) error {
	defer c.Close()
	if err := serverHello(c, token); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(handshakeTimeout))
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return ErrAuth
	}
	switch mode[0] {
	case 'P':
		return receive(c, dir)
	case 'F':
		return serveImage(c, dir)
	}
	return fmt.Errorf("page server: the client asked for mode %#x", mode[0])
}

func receive(c net.Conn, dir string) error {
	w, err := image.Create(dir, false)
	if err != nil {
		return err
	}
	err = receiveFrames(bufio.NewReaderSize(idleConn{c}, 1<<20), w)
	if err != nil {
		w.Abort()
		msg := []byte(err.Error())
		c.Write(append([]byte{'E', byte(len(msg) >> 24), byte(len(msg) >> 16), byte(len(msg) >> 8), byte(len(msg))}, msg...))
		return err
	}
	_, err = c.Write([]byte{'K'})
	return err
}

func receiveFrames(r *bufio.Reader, w *image.Writer) error {
	files := map[uint32]*os.File{}
	u32 := func() (uint32, error) {
		var b [4]byte
		_, err := io.ReadFull(r, b[:])
		return binary.BigEndian.Uint32(b[:]), err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("page server: the client sent %s", fmt.Sprintf(format, args...))
	}
	buf := make([]byte, MaxFrame)
	for {
		kind, err := r.ReadByte()
		if err != nil {
			return bad("no commit (%v)", err)
		}
		switch kind {
		case 'C':
			id, err := u32()
			var nb [2]byte
			if err == nil {
				_, err = io.ReadFull(r, nb[:])
			}
			n := binary.BigEndian.Uint16(nb[:])
			if err != nil || n == 0 || n > 255 {
				return bad("a bad file header")
			}
			name := make([]byte, n)
			if _, err := io.ReadFull(r, name); err != nil {
				return bad("a short file name")
			}
			if files[id] != nil || len(files) >= MaxFiles || string(name) == image.IndexName {
				return bad("file %d (%q) twice, too many files, or an index as a file", id, name)
			}
			f, err := w.CreateReceived(string(name))
			if err != nil {
				return bad("a bad file: %v", err)
			}
			files[id] = f
		case 'D':
			id, err := u32()
			var n uint32
			if err == nil {
				n, err = u32()
			}
			if err != nil || n > MaxFrame || files[id] == nil {
				return bad("a bad data frame (file %d, %d bytes)", id, n)
			}
			if _, err := io.ReadFull(r, buf[:n]); err != nil {
				return bad("a short data frame")
			}
			if _, err := files[id].Write(buf[:n]); err != nil {
				return err
			}
		case 'I':
			n, err := u32()
			if err != nil || n == 0 || n > MaxIndex {
				return bad("a bad index (%d bytes)", n)
			}
			idx := make([]byte, n)
			if _, err := io.ReadFull(r, idx); err != nil {
				return bad("a short index")
			}
			return w.CommitReceived(idx, true)
		default:
			return bad("a frame of unknown kind %#x", kind)
		}
	}
}

// idleTimeout drops a client that sends nothing for this long.
const idleTimeout = time.Minute

// idleConn is a connection whose reads time out when the peer goes quiet.
type idleConn struct{ net.Conn }

func (c idleConn) Read(b []byte) (int, error) {
	c.SetReadDeadline(time.Now().Add(idleTimeout))
	return c.Conn.Read(b)
}

// Push sends the committed image in dir to the page server at addr.
func Push(addr string, token []byte, dir string) error {
	c, err := net.DialTimeout("tcp", addr, handshakeTimeout)
	if err != nil {
		return fmt.Errorf("page server %s: %w", addr, err)
	}
	defer c.Close()
	if err := clientHello(c, token); err != nil {
		return fmt.Errorf("page server %s: %w", addr, err)
	}
	if _, err := c.Write([]byte{'P'}); err != nil {
		return fmt.Errorf("page server %s: %w", addr, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	bw := bufio.NewWriterSize(c, 1<<20)
	hdr := make([]byte, 9)
	buf := make([]byte, MaxFrame)
	var id uint32
	for _, e := range ents {
		if e.Name() == image.IndexName || !e.Type().IsRegular() {
			continue
		}
		id++
		name := e.Name()
		bw.WriteByte('C')
		binary.BigEndian.PutUint32(hdr[:4], id)
		binary.BigEndian.PutUint16(hdr[4:6], uint16(len(name)))
		bw.Write(hdr[:6])
		bw.WriteString(name)
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		for {
			n, err := f.Read(buf)
			if n > 0 {
				hdr[0] = 'D'
				binary.BigEndian.PutUint32(hdr[1:5], id)
				binary.BigEndian.PutUint32(hdr[5:9], uint32(n))
				bw.Write(hdr[:9])
				if _, werr := bw.Write(buf[:n]); werr != nil {
					f.Close()
					return fmt.Errorf("page server %s: %w", addr, werr)
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				f.Close()
				return err
			}
		}
		f.Close()
	}
	idx, err := os.ReadFile(filepath.Join(dir, image.IndexName))
	if err != nil {
		return err
	}
	bw.WriteByte('I')
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(idx)))
	bw.Write(hdr[:4])
	bw.Write(idx)
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("page server %s: %w", addr, err)
	}
	br := bufio.NewReader(c)
	kind, err := br.ReadByte()
	if err != nil {
		return fmt.Errorf("page server %s: no answer to the commit: %w", addr, err)
	}
	if kind == 'K' {
		return nil
	}
	var nb [4]byte
	if _, err := io.ReadFull(br, nb[:]); err != nil || kind != 'E' {
		return fmt.Errorf("page server %s: a bad answer to the commit", addr)
	}
	msg := make([]byte, min(binary.BigEndian.Uint32(nb[:]), 4096))
	io.ReadFull(br, msg)
	return fmt.Errorf("page server %s refused the image: %s", addr, msg)
}
