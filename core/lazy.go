package core

import (
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/pagesrv"
)

// Lazy restore (RestoreOptions.LazyPages): the private anonymous memory of the restored
// processes is registered with a userfaultfd in missing mode instead of being filled, and
// the tree runs at once. gocr serves each page on its first touch (with the 64 KiB after
// it) and copies the rest in the background, front to back, until every page is in; then
// it unregisters the memory and lets go. Pages come from the page files mapped into gocr,
// each 64 MiB chunk checksummed on its first use; a chunk that fails its checksum, or any
// failure to copy, kills the tree (a process never runs on with a hole in its memory).
//
// The kernel tells gocr of what changes the address space meanwhile: fork (the child gets a
// userfaultfd of its own, with the pages its parent was still waiting for), mremap (the
// pages move), madvise(DONTNEED) and munmap (those pages are no longer to be copied; a later
// touch gets zeros, as it would have).
//
// Each process also holds a copy of its userfaultfd (close-on-exec, at fd 2000 to 2999):
// should gocr die before the end, the memory stays registered and a touch of a missing page
// waits (the process can be killed) instead of reading zeros. The copy stays, idle, once
// the pages are in; a dump skips it.

const (
	lazyFdMin    = 2000
	lazyFdMax    = 2999
	lazyFaultWin = 64 << 10 // copied on a fault, from the page touched
	lazyStep     = 1 << 20  // copied at a time in the background
)

// lazyFile is a page file mapped into gocr.
type lazyFile struct {
	name     string
	data     []byte // mapped; nil for a file of a remote page server
	e        *imagepb.FileEntry
	verified []bool // by checksum chunk
	// remote serves the file (a lazy restore from a page server): each checksum chunk is
	// fetched whole on its first use, checked, and kept in chunks.
	remote *pagesrv.Client
	chunks map[uint64][]byte
}

// bytes returns the file's bytes from off, n of them at most (fewer at the end of a chunk
// of a remote file), checked against the index's checksums.
func (f *lazyFile) bytes(off, n uint64) ([]byte, error) {
	cs := f.e.ChunkSize
	if f.remote == nil {
		if err := f.verify(off, n); err != nil {
			return nil, err
		}
		return f.data[off : off+n], nil
	}
	c := off / cs
	chunk := f.chunks[c]
	if chunk == nil {
		if c >= uint64(len(f.e.ChunkCrc32C)) {
			return nil, fmt.Errorf("image file %s: no chunk at %d: %w", f.name, off, image.ErrCorrupt)
		}
		chunk = make([]byte, min(cs, f.e.Size-c*cs))
		if err := f.remote.ReadAt(f.name, chunk, c*cs); err != nil {
			return nil, err
		}
		if got := crc32.Checksum(chunk, castagnoli); got != f.e.ChunkCrc32C[c] {
			return nil, fmt.Errorf("image file %s (from the page server): checksum %08x at bytes %d-%d, index says %08x: %w", f.name, got, c*cs, c*cs+uint64(len(chunk)), f.e.ChunkCrc32C[c], image.ErrCorrupt)
		}
		f.chunks[c] = chunk
	}
	lo := off - c*cs
	return chunk[lo:min(uint64(len(chunk)), lo+n)], nil
}

// lazyRange is a stretch of memory still to be copied, and where its content is.
type lazyRange struct {
	addr, len uint64
	src       *lazyFile
	off       uint64
	level     int // of the image in the chain: the background copy takes level 0 first
}

// lazyUffd is one address space's userfaultfd (gocr's fd of it).
type lazyUffd struct {
	fd         int
	pid        int // 0 for a child forked since the restore
	pending    []lazyRange
	registered []span // to unregister at the end
}

type lazyServer struct {
	files map[string]*lazyFile
	// remote is the page server the pages come from (nil: the image's own files), and
	// tmpDir the directory its metadata was fetched into, removed at the end ("": none).
	remote *pagesrv.Client
	tmpDir string

	mu     sync.Mutex
	uffds  []*lazyUffd
	sealed bool // every process is registered
	failed error

	total, copied uint64
	kill          func() // the tree, on failure
	started       bool
	stop          chan struct{}
	done          chan struct{}
	err           error
	elapsed       time.Duration
	start         time.Time
}

func newLazyServer() *lazyServer {
	return &lazyServer{files: map[string]*lazyFile{}, stop: make(chan struct{}), done: make(chan struct{}), start: time.Now()}
}

// file maps the page file key of ck (once).
func (s *lazyServer) file(ck *image.Checkpoint, key, name string) (*lazyFile, error) {
	if f := s.files[key]; f != nil {
		return f, nil
	}
	e, ok := ck.Entry(name)
	if !ok {
		return nil, fmt.Errorf("page file %s is not in the image: %w", name, image.ErrCorrupt)
	}
	if e.Compression != imagepb.Compression_COMPRESSION_NONE {
		return nil, fmt.Errorf("page file %s is compressed: lazy pages need a plain image (dump without --compress): %w", name, ErrBadArgs)
	}
	f := &lazyFile{name: name, e: e, verified: make([]bool, len(e.ChunkCrc32C))}
	if s.remote != nil {
		f.remote, f.chunks = s.remote, map[uint64][]byte{}
		s.files[key] = f
		return f, nil
	}
	fd, err := linux.Open(ck.Path(name), linux.ORdonly|linux.OCloexec, 0)
	if err != nil {
		return nil, err
	}
	defer linux.Close(fd)
	if e.Size > 0 {
		if f.data, err = unix.Mmap(fd, 0, int(e.Size), unix.PROT_READ, unix.MAP_SHARED); err != nil {
			return nil, os.NewSyscallError("mmap "+name, err)
		}
	}
	s.files[key] = f
	return f, nil
}

// add registers the lazy memory of a process on its userfaultfd ufd (gocr's fd) and starts
// serving it.
func (s *lazyServer) add(pid, ufd int, vmas []span, srcs []lazyRange) error {
	if err := linux.UffdAPI(ufd, linux.UffdFeatureEventFork|linux.UffdFeatureEventRemap|linux.UffdFeatureEventRemove|linux.UffdFeatureEventUnmap); err != nil {
		return err
	}
	u := &lazyUffd{fd: ufd, pid: pid, pending: srcs}
	for _, v := range vmas {
		if err := linux.UffdRegisterMissing(ufd, v.lo, v.hi-v.lo); err != nil {
			return fmt.Errorf("register %#x-%#x: %w", v.lo, v.hi, err)
		}
		u.registered = append(u.registered, v)
	}
	s.mu.Lock()
	s.uffds = append(s.uffds, u)
	for _, r := range srcs {
		s.total += r.len
	}
	start := !s.started
	s.started = true
	s.mu.Unlock()
	if start {
		go s.serve()
	}
	return nil
}

// seal says every process is registered: once its pending pages are in, the server ends.
func (s *lazyServer) seal() {
	s.mu.Lock()
	s.sealed = true
	started := s.started
	s.mu.Unlock()
	if !started {
		s.finish(nil)
	}
}

// abort stops the server (the restore failed: the tree is killed anyway).
func (s *lazyServer) abort() {
	s.mu.Lock()
	started := s.started
	s.started = true
	s.mu.Unlock()
	if started {
		close(s.stop)
		<-s.done
	} else {
		s.finish(errors.New("restore failed"))
	}
}

// wait waits until every page is in, or the server failed (the tree was then killed).
func (s *lazyServer) wait() error {
	<-s.done
	return s.err
}

func (s *lazyServer) finish(err error) {
	s.err = err
	s.elapsed = time.Since(s.start)
	for _, u := range s.uffds {
		for _, r := range u.registered {
			unregister(u.fd, r)
		}
		linux.Close(u.fd)
	}
	s.uffds = nil
	for _, f := range s.files {
		if f.data != nil {
			unix.Munmap(f.data)
		}
	}
	s.files = nil
	if s.remote != nil {
		s.remote.Close()
	}
	if s.tmpDir != "" {
		os.RemoveAll(s.tmpDir)
	}
	close(s.done)
}

func unregister(fd int, r span) { linux.UffdUnregister(fd, r.lo, r.hi-r.lo) }

// serve is the server's loop: events first, then a step of the background copy.
func (s *lazyServer) serve() {
	buf := make([]byte, 64*linux.UffdMsgSize)
	for {
		select {
		case <-s.stop:
			s.finish(errors.New("stopped"))
			return
		default:
		}
		s.mu.Lock()
		uffds := append([]*lazyUffd(nil), s.uffds...)
		sealed := s.sealed
		s.mu.Unlock()
		busy := false
		for _, u := range uffds {
			if len(u.pending) > 0 {
				busy = true
			}
		}
		if !busy && sealed {
			s.finish(nil)
			return
		}
		pfds := make([]unix.PollFd, len(uffds))
		for i, u := range uffds {
			pfds[i] = unix.PollFd{Fd: int32(u.fd), Events: unix.POLLIN}
		}
		timeout := 5
		if busy {
			timeout = 0
		}
		if _, err := unix.Poll(pfds, timeout); err != nil && err != unix.EINTR {
			s.fail(fmt.Errorf("poll: %w", err))
			return
		}
		events := false
		for i, u := range uffds {
			if pfds[i].Revents&unix.POLLIN == 0 {
				continue
			}
			n, err := unix.Read(u.fd, buf)
			if err == unix.EAGAIN || n <= 0 {
				continue
			}
			events = true
			for _, m := range linux.ParseUffdMsgs(buf[:n]) {
				if err := s.event(u, m); err != nil {
					s.fail(err)
					return
				}
			}
		}
		if events || !busy {
			continue
		}
		for _, u := range uffds {
			if len(u.pending) > 0 {
				r := u.pending[nextRange(u.pending)]
				if err := s.copy(u, r.addr, min(r.len, lazyStep)); err != nil {
					s.fail(err)
					return
				}
				break
			}
		}
	}
}

func (s *lazyServer) fail(err error) {
	s.mu.Lock()
	kill := s.kill
	s.mu.Unlock()
	if kill != nil {
		kill()
	}
	s.finish(fmt.Errorf("lazy pages: %w (the tree was killed: it would have run on with missing memory)", err))
}

// event handles one message of u.
func (s *lazyServer) event(u *lazyUffd, m linux.UffdMsg) error {
	switch m.Event {
	case linux.UffdEventPagefault:
		page := m.B &^ (linux.PageSize - 1)
		i := findRange(u.pending, page)
		if i < 0 {
			// Not to be copied (dropped, or never dumped): zeros, as the kernel would give.
			err := linux.UffdZeropage(u.fd, page, linux.PageSize)
			if err == unix.EEXIST || err == unix.EAGAIN {
				err = linux.UffdWake(u.fd, page, linux.PageSize)
			}
			if err != nil && err != unix.ESRCH && err != unix.ENOENT {
				return fmt.Errorf("zero page %#x: %w", page, err)
			}
			return nil
		}
		r := u.pending[i]
		return s.copy(u, page, min(lazyFaultWin, r.addr+r.len-page))
	case linux.UffdEventFork:
		child := &lazyUffd{fd: int(uint32(m.A)), pending: append([]lazyRange(nil), u.pending...), registered: append([]span(nil), u.registered...)}
		s.mu.Lock()
		s.uffds = append(s.uffds, child)
		for _, r := range child.pending {
			s.total += r.len
		}
		s.mu.Unlock()
	case linux.UffdEventRemap:
		from, to, n := m.A, m.B, m.C
		var moved []lazyRange
		u.pending, moved = cutRanges(u.pending, from, from+n)
		for _, r := range moved {
			r.addr = r.addr - from + to
			u.pending = append(u.pending, r)
		}
		sort.Slice(u.pending, func(i, j int) bool { return u.pending[i].addr < u.pending[j].addr })
		u.registered = append(u.registered, span{to, to + n})
	case linux.UffdEventRemove, linux.UffdEventUnmap:
		u.pending, _ = cutRanges(u.pending, m.A, m.B)
	}
	return nil
}

// copy copies [addr, addr+n) of u's pending memory into its process.
func (s *lazyServer) copy(u *lazyUffd, addr, n uint64) error {
	i := findRange(u.pending, addr)
	if i < 0 {
		return nil
	}
	r := u.pending[i]
	n = min(n, r.addr+r.len-addr)
	src, err := r.src.bytes(r.off+addr-r.addr, n)
	if err != nil {
		return err
	}
	n = uint64(len(src))
	done, err := linux.UffdCopy(u.fd, uintptr(addr), unsafe.Pointer(&src[0]), n)
	switch {
	case err == nil:
	case err == unix.EAGAIN:
		// The address space is changing: its events come first; what was copied stays.
	case err == unix.EEXIST:
		done += linux.PageSize // that page is there already: skip it
		linux.UffdWake(u.fd, addr, done)
	case err == unix.ESRCH || err == unix.ENOENT:
		// The address space is gone (the process exited or exec'd): nothing more to copy.
		u.pending = nil
		return nil
	default:
		return fmt.Errorf("copy %#x-%#x into pid %d: %w", addr, addr+n, u.pid, err)
	}
	done = min(done, n)
	u.pending, _ = cutRanges(u.pending, addr, addr+done)
	s.mu.Lock()
	s.copied += done
	s.mu.Unlock()
	return nil
}

// verify checks the checksums of the chunks of f that [off, off+n) is in, once each.
func (f *lazyFile) verify(off, n uint64) error {
	cs := f.e.ChunkSize
	for c := off / cs; c <= (off+n-1)/cs && c < uint64(len(f.verified)); c++ {
		if f.verified[c] {
			continue
		}
		lo, hi := c*cs, min((c+1)*cs, uint64(len(f.data)))
		if got := crc32.Checksum(f.data[lo:hi], castagnoli); got != f.e.ChunkCrc32C[c] {
			return fmt.Errorf("image file %s: checksum %08x at bytes %d-%d, index says %08x: %w", f.name, got, lo, hi, f.e.ChunkCrc32C[c], image.ErrCorrupt)
		}
		f.verified[c] = true
	}
	return nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// nextRange is the pending range the background copy takes next: the first of the most
// recently written ones. An incremental image's own pages were written after those its
// parents hold (a pre-dump chain: the last dump holds what the job wrote last), so they come
// first; within one image, front to back.
func nextRange(rs []lazyRange) int {
	best := 0
	for i, r := range rs {
		if r.level < rs[best].level {
			best = i
		}
	}
	return best
}

// findRange is the index of the pending range holding addr, or -1.
func findRange(rs []lazyRange, addr uint64) int {
	i := sort.Search(len(rs), func(i int) bool { return rs[i].addr+rs[i].len > addr })
	if i < len(rs) && rs[i].addr <= addr {
		return i
	}
	return -1
}

// cutRanges removes [lo, hi) from the sorted ranges, returning what is left and what was cut.
func cutRanges(rs []lazyRange, lo, hi uint64) (kept, cut []lazyRange) {
	for _, r := range rs {
		end := r.addr + r.len
		if end <= lo || r.addr >= hi {
			kept = append(kept, r)
			continue
		}
		if r.addr < lo {
			kept = append(kept, lazyRange{addr: r.addr, len: lo - r.addr, src: r.src, off: r.off, level: r.level})
		}
		a, b := max(r.addr, lo), min(end, hi)
		cut = append(cut, lazyRange{addr: a, len: b - a, src: r.src, off: r.off + a - r.addr, level: r.level})
		if end > hi {
			kept = append(kept, lazyRange{addr: hi, len: end - hi, src: r.src, off: r.off + hi - r.addr, level: r.level})
		}
	}
	return kept, cut
}

// pageReader reads a page file gocr writes into the processes itself (compressed, or on a
// page server).
type pageReader interface {
	ReadFull(b []byte, off uint64) error
	Close() error
}

// remotePages is a page file on the page server of a lazy restore.
type remotePages struct {
	cl   *pagesrv.Client
	name string
}

func (p remotePages) ReadFull(b []byte, off uint64) error { return p.cl.ReadAt(p.name, b, off) }
func (p remotePages) Close() error                        { return nil } // the lazy server closes the session

// fetchImage opens a session with the page server at addr and fetches the metadata of the
// image it serves into dir (a temporary directory if ""): every file but the page files,
// which are left as holes of their size, to be read from the server.
func fetchImage(addr string, token []byte, dir string) (*pagesrv.Client, string, error) {
	cl, err := pagesrv.Fetch(addr, token)
	if err != nil {
		return nil, "", err
	}
	fail := func(err error) (*pagesrv.Client, string, error) {
		cl.Close()
		return nil, "", err
	}
	b, err := cl.Index()
	if err != nil {
		return fail(err)
	}
	idx := &imagepb.Index{}
	if err := proto.Unmarshal(b, idx); err != nil {
		return fail(fmt.Errorf("page server %s: a bad index: %v: %w", addr, err, image.ErrCorrupt))
	}
	if idx.Parent != "" {
		return fail(fmt.Errorf("page server %s: the image is incremental: a lazy restore from a page server takes a whole image (dump without --prev-images-dir): %w", addr, ErrBadArgs))
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "gocr-lazy-"); err != nil {
			return fail(err)
		}
		dir = filepath.Join(dir, "img")
	}
	w, err := image.Create(dir, false)
	if err != nil {
		return fail(err)
	}
	for _, e := range idx.Files {
		f, err := w.CreateReceived(e.Name)
		if err == nil {
			if strings.HasPrefix(e.Name, "pages-") {
				if e.Compression != imagepb.Compression_COMPRESSION_NONE {
					err = fmt.Errorf("page server %s: %s is compressed: a lazy restore takes a plain image: %w", addr, e.Name, ErrBadArgs)
				} else {
					err = f.Truncate(int64(e.Size)) // a hole: read from the server
				}
			} else {
				err = cl.GetFile(e.Name, e.Size, f)
			}
		}
		if err != nil {
			w.Abort()
			return fail(err)
		}
	}
	// The page files are holes here: only the metadata can be checked now; the pages are
	// checked chunk by chunk as they come.
	if err := w.CommitReceivedBut(b, false, func(name string) bool { return strings.HasPrefix(name, "pages-") }); err != nil {
		w.Abort()
		return fail(err)
	}
	return cl, dir, nil
}
