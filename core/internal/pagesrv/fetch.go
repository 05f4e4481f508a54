package pagesrv

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/gocr/gocr/core/image"
)

// A lazy restore fetches from a page server serving an image (mode 'F'):
//
//	'L'                               the index: 'K' u32 n, index[n]
//	'G' u16 n, name[n]                a whole file: 'K' u64 n, data[n]
//	'R' u16 n, name[n], u64 off, u32 len (len <= MaxFrame)
//	                                  bytes of a file: 'K' data[len]
//
// A request the server refuses (a file the index does not list, a range past its end) is
// answered 'E' u32 n, message[n], and ends the session.

// serveImage answers a lazy restore's requests from the image in dir until it hangs up.
func serveImage(c net.Conn, dir string) error {
	img, err := image.Open(dir)
	if err != nil {
		return err
	}
	idx, err := os.ReadFile(filepath.Join(dir, image.IndexName))
	if err != nil {
		return err
	}
	r := bufio.NewReader(idleConn{c})
	w := bufio.NewWriterSize(c, 1<<20)
	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	open := func(name string) (*os.File, uint64, error) {
		e, ok := img.Entry(name)
		if !ok {
			return nil, 0, fmt.Errorf("%s is not in the image", name)
		}
		if f := files[name]; f != nil {
			return f, e.Size, nil
		}
		f, err := os.Open(img.Path(name))
		if err != nil {
			return nil, 0, err
		}
		files[name] = f
		return f, e.Size, nil
	}
	refuse := func(err error) error {
		msg := []byte(err.Error())
		w.WriteByte('E')
		binary.Write(w, binary.BigEndian, uint32(len(msg)))
		w.Write(msg)
		w.Flush()
		return fmt.Errorf("page server: refused a request: %w", err)
	}
	buf := make([]byte, MaxFrame)
	for {
		kind, err := r.ReadByte()
		if errors.Is(err, io.EOF) {
			return nil // the restore is done
		}
		if err != nil {
			return err
		}
		switch kind {
		case 'L':
			w.WriteByte('K')
			binary.Write(w, binary.BigEndian, uint32(len(idx)))
			w.Write(idx)
		case 'G', 'R':
			name, err := readName(r)
			if err != nil {
				return refuse(err)
			}
			f, size, err := open(name)
			if err != nil {
				return refuse(err)
			}
			off, n := uint64(0), size
			if kind == 'R' {
				var hdr [12]byte
				if _, err := io.ReadFull(r, hdr[:]); err != nil {
					return err
				}
				off, n = binary.BigEndian.Uint64(hdr[:8]), uint64(binary.BigEndian.Uint32(hdr[8:]))
				if n > MaxFrame || off > size || n > size-off {
					return refuse(fmt.Errorf("%s: %d bytes at %d, past its %d", name, n, off, size))
				}
			}
			w.WriteByte('K')
			if kind == 'G' {
				binary.Write(w, binary.BigEndian, n)
			}
			for done := uint64(0); done < n; {
				k := min(n-done, uint64(len(buf)))
				if _, err := f.ReadAt(buf[:k], int64(off+done)); err != nil {
					return err
				}
				if _, err := w.Write(buf[:k]); err != nil {
					return err
				}
				done += k
			}
		default:
			return refuse(fmt.Errorf("a request of unknown kind %#x", kind))
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
}

func readName(r *bufio.Reader) (string, error) {
	var nb [2]byte
	if _, err := io.ReadFull(r, nb[:]); err != nil {
		return "", err
	}
	n := binary.BigEndian.Uint16(nb[:])
	if n == 0 || n > 255 {
		return "", fmt.Errorf("a name of %d bytes", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

// Client is a lazy restore's session with a page server serving an image. It is safe for
// concurrent use (one request at a time).
type Client struct {
	mu   sync.Mutex
	addr string
	c    net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
}

// Fetch opens a session with the page server at addr, serving an image.
func Fetch(addr string, token []byte) (*Client, error) {
	c, err := net.DialTimeout("tcp", addr, handshakeTimeout)
	if err != nil {
		return nil, fmt.Errorf("page server %s: %w", addr, err)
	}
	if err := clientHello(c, token); err != nil {
		c.Close()
		return nil, fmt.Errorf("page server %s: %w", addr, err)
	}
	if _, err := c.Write([]byte{'F'}); err != nil {
		c.Close()
		return nil, fmt.Errorf("page server %s: %w", addr, err)
	}
	return &Client{addr: addr, c: c, r: bufio.NewReaderSize(c, 1<<20), w: bufio.NewWriter(c)}, nil
}

// Close ends the session.
func (cl *Client) Close() error { return cl.c.Close() }

func (cl *Client) request(kind byte, name string, tail []byte) error {
	cl.w.WriteByte(kind)
	if kind != 'L' {
		binary.Write(cl.w, binary.BigEndian, uint16(len(name)))
		cl.w.WriteString(name)
	}
	cl.w.Write(tail)
	if err := cl.w.Flush(); err != nil {
		return fmt.Errorf("page server %s: %w", cl.addr, err)
	}
	ans, err := cl.r.ReadByte()
	if err != nil {
		return fmt.Errorf("page server %s: no answer: %w", cl.addr, err)
	}
	if ans == 'K' {
		return nil
	}
	var nb [4]byte
	if _, err := io.ReadFull(cl.r, nb[:]); err != nil || ans != 'E' {
		return fmt.Errorf("page server %s: a bad answer", cl.addr)
	}
	msg := make([]byte, min(binary.BigEndian.Uint32(nb[:]), 4096))
	io.ReadFull(cl.r, msg)
	return fmt.Errorf("page server %s: %s", cl.addr, msg)
}

// Index returns the image's index, as encoded.
func (cl *Client) Index() ([]byte, error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if err := cl.request('L', "", nil); err != nil {
		return nil, err
	}
	var nb [4]byte
	if _, err := io.ReadFull(cl.r, nb[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(nb[:])
	if n > MaxIndex {
		return nil, fmt.Errorf("page server %s: an index of %d bytes", cl.addr, n)
	}
	b := make([]byte, n)
	_, err := io.ReadFull(cl.r, b)
	return b, err
}

// GetFile copies the whole file name into w; want is its size as the index says.
func (cl *Client) GetFile(name string, want uint64, w io.Writer) error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if err := cl.request('G', name, nil); err != nil {
		return err
	}
	var nb [8]byte
	if _, err := io.ReadFull(cl.r, nb[:]); err != nil {
		return err
	}
	if n := binary.BigEndian.Uint64(nb[:]); n != want {
		return fmt.Errorf("page server %s: %s is %d bytes, its index says %d", cl.addr, name, n, want)
	}
	_, err := io.CopyN(w, cl.r, int64(want))
	return err
}

// ReadAt reads len(b) bytes of file name at off, in requests of MaxFrame at most.
func (cl *Client) ReadAt(name string, b []byte, off uint64) error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for len(b) > 0 {
		n := min(len(b), MaxFrame)
		var tail [12]byte
		binary.BigEndian.PutUint64(tail[:8], off)
		binary.BigEndian.PutUint32(tail[8:], uint32(n))
		if err := cl.request('R', name, tail[:]); err != nil {
			return err
		}
		if _, err := io.ReadFull(cl.r, b[:n]); err != nil {
			return fmt.Errorf("page server %s: %w", cl.addr, err)
		}
		b, off = b[n:], off+uint64(n)
	}
	return nil
}
