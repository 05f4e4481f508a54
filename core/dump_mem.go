package core

import (
	"context"
	"fmt"
	"os"

	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/procfs"
)

// collectMemory lists the pages of the process that hold data: present or swapped, never the
// zero page, and of a private file mapping only the pages copied on write. In an incremental
// dump, a mapping tracked since the parent image contributes only the pages written since,
// and refers to the parent for the others that hold data there.
func (d *dumper) collectMemory(p *procDump) error {
	if d.opts.Tracked && len(p.trackers) == 0 {
		return fmt.Errorf("its memory is not tracked: reset the tracking first (gocr track -t PID, or a dump with --track-mem), then dump with --tracked: %w", ErrBadArgs)
	}
	pm, err := os.Open(procfs.Path(p.t.Pid, "pagemap"))
	if err != nil {
		return fmt.Errorf("open pagemap: %w", err)
	}
	defer pm.Close()
	const ret = linux.PageIsPresent | linux.PageIsSwapped | linux.PageIsFile | linux.PageIsPFNZero
	var all []pageRun
	add := func(lo, hi uint64, direct, inParent bool) {
		n := (hi - lo) / linux.PageSize
		if k := len(all); k > 0 && all[k-1].addr+all[k-1].n*linux.PageSize == lo && all[k-1].direct == direct && all[k-1].inParent == inParent {
			all[k-1].n += n
		} else {
			all = append(all, pageRun{addr: lo, n: n, direct: direct, inParent: inParent})
		}
	}
	for i, v := range p.img.Vmas {
		switch v.Kind {
		case imagepb.VMAKind_VMA_KIND_ANON_PRIVATE, imagepb.VMAKind_VMA_KIND_HEAP,
			imagepb.VMAKind_VMA_KIND_STACK, imagepb.VMAKind_VMA_KIND_FILE_PRIVATE:
		default:
			continue
		}
		direct := p.maps[i].Read
		if d.opts.Tracked && trackable(v) && p.maps[i].HasFlag("uw") {
			// Tracked since the reset: only what was written since and holds data now.
			_, held, err := writtenHeld(int(pm.Fd()), v.Start, v.End)
			if err != nil {
				return err
			}
			for _, s := range held {
				add(s.lo, s.hi, direct, false)
			}
			continue
		}
		if inParent, ok := d.sinceParent(p, i); ok {
			// Written since the parent: what holds data now is dumped, a hole stays a hole;
			// not written: as in the parent.
			written, spans, err := writtenHeld(int(pm.Fd()), v.Start, v.End)
			if err != nil {
				return err
			}
			kept := subtract(inParent, written)
			marked := map[uint64]bool{}
			for _, s := range kept {
				marked[s.lo] = true
			}
			spans = append(spans, kept...)
			sortSpans(spans)
			for _, s := range spans {
				add(s.lo, s.hi, direct, marked[s.lo])
			}
			continue
		}
		regions, err := linux.PagemapScan(int(pm.Fd()), v.Start, v.End, linux.PageIsPresent|linux.PageIsSwapped, ret)
		if err != nil {
			return fmt.Errorf("scan pages of %#x-%#x: %w", v.Start, v.End, err)
		}
		for _, r := range regions {
			c := r.Categories
			if c&linux.PageIsPFNZero != 0 {
				continue
			}
			if c&linux.PageIsSwapped == 0 && c&linux.PageIsFile != 0 {
				continue // a page of the file (private mapping, not copied) or page cache
			}
			add(r.Start, r.End, direct, false)
		}
	}
	// Runs of two adjacent mappings may have merged above; record them as the image's runs.
	for _, r := range all {
		p.img.Pages = append(p.img.Pages, &imagepb.PageRun{Vaddr: r.addr, NrPages: r.n, InParent: r.inParent})
		if !r.inParent {
			p.runs = append(p.runs, r)
			p.pages += r.n
		}
	}
	return nil
}

// writtenHeld lists the pages of lo-hi written since the tracking was reset, and those of
// them that hold data now (present or swapped, not the zero page).
func writtenHeld(pm int, lo, hi uint64) (written, held []span, err error) {
	const ret = linux.PageIsPresent | linux.PageIsSwapped | linux.PageIsFile | linux.PageIsPFNZero
	regions, err := linux.PagemapWritten(pm, lo, hi)
	if err != nil {
		return nil, nil, fmt.Errorf("scan written pages of %#x-%#x: %w", lo, hi, err)
	}
	for _, w := range regions {
		written = append(written, span{w.Start, w.End})
	}
	if len(regions) == 0 {
		return nil, nil, nil
	}
	rs, err := linux.PagemapWrittenHeld(pm, lo, hi, ret)
	if err != nil {
		return nil, nil, fmt.Errorf("scan written pages of %#x-%#x: %w", lo, hi, err)
	}
	for _, r := range rs {
		if r.Categories&linux.PageIsPFNZero != 0 {
			continue
		}
		if k := len(held); k > 0 && held[k-1].hi == r.Start {
			held[k-1].hi = r.End
		} else {
			held = append(held, span{r.Start, r.End})
		}
	}
	return written, held, nil
}

// chunk is a piece of memory on its way from a process to the image.
type chunk struct {
	buf []byte
	n   int
	err error
}

const chunkSize = 8 << 20

// writeMemory copies every process's pages into its page file. One goroutine reads with
// process_vm_readv while another writes the previous chunk, so reading and writing overlap.
func (d *dumper) writeMemory(ctx context.Context) error {
	var total, done uint64
	for _, pid := range d.order {
		total += d.procs[pid].pages * linux.PageSize
	}
	for _, pid := range d.order {
		p := d.procs[pid]
		if len(p.runs) == 0 {
			continue
		}
		name := image.PagesName(d.vpid(pid))
		var df *image.DataFile
		var err error
		if d.opts.Compress {
			df, err = d.w.CreateCompressed(name)
		} else {
			df, err = d.w.CreateData(name, int64(p.pages*linux.PageSize))
		}
		if err != nil {
			return fmt.Errorf("dump pid %d: %w", pid, err)
		}
		free := make(chan []byte, 2)
		free <- make([]byte, chunkSize)
		free <- make([]byte, chunkSize)
		full := make(chan chunk, 2)
		stop := make(chan struct{})
		go readPages(pid, p.runs, free, full, stop)
		var werr error
		for c := range full {
			if werr == nil {
				werr = c.err
			}
			if werr == nil && ctx.Err() != nil {
				werr = fmt.Errorf("dump: %w", ErrInterrupted)
			}
			if werr == nil {
				_, werr = df.Write(c.buf[:c.n])
				done += uint64(c.n)
				if d.opts.Progress != nil {
					d.opts.Progress(Progress{Stage: "memory", Done: done, Total: total})
				}
			}
			if werr != nil {
				close(stop)
				for range full {
				}
				break
			}
			free <- c.buf
		}
		if cerr := df.Close(); werr == nil && cerr != nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("dump pid %d: write pages: %w", pid, werr)
		}
		if df.Size() != p.pages*linux.PageSize {
			return fmt.Errorf("dump pid %d: wrote %d bytes of pages, expected %d", pid, df.Size(), p.pages*linux.PageSize)
		}
		p.img.PagesFile = name
		d.stats.Pages += p.pages
		d.stats.Bytes += df.Size()
		d.stats.Stored += df.Stored()
	}
	return d.writeShmem()
}

// readPages reads the runs in order into chunks. It stops early when stop is closed.
func readPages(pid int, runs []pageRun, free chan []byte, full chan<- chunk, stop <-chan struct{}) {
	defer close(full)
	var mem *os.File
	defer func() {
		if mem != nil {
			mem.Close()
		}
	}()
	var iov []linux.RemoteIovec
	var buf []byte
	n := 0
	flush := func() bool {
		if n == 0 {
			return true
		}
		c := chunk{buf: buf, n: n}
		if len(iov) > 0 {
			got, err := linux.ProcessVMReadvMany(pid, buf[n-iovLen(iov):n], iov)
			if err == nil && got != iovLen(iov) {
				err = fmt.Errorf("process_vm_readv: read %d of %d bytes", got, iovLen(iov))
			}
			c.err = err
		}
		iov = iov[:0]
		select {
		case full <- c:
		case <-stop:
			return false
		}
		buf, n = nil, 0
		return c.err == nil
	}
	for _, r := range runs {
		addr, left := r.addr, r.n*linux.PageSize
		for left > 0 {
			if buf == nil {
				select {
				case buf = <-free:
				case <-stop:
					return
				}
			}
			m := min(left, uint64(len(buf)-n))
			if r.direct {
				iov = append(iov, linux.RemoteIovec{Base: uintptr(addr), Len: int(m)})
			} else {
				// Not readable (PROT_NONE, write-only): /proc/PID/mem reads it with FOLL_FORCE.
				// Flush the pending vector first so that the chunk stays in order.
				if len(iov) > 0 {
					start := n - iovLen(iov)
					got, err := linux.ProcessVMReadvMany(pid, buf[start:n], iov)
					if err == nil && got != iovLen(iov) {
						err = fmt.Errorf("process_vm_readv: read %d of %d bytes", got, iovLen(iov))
					}
					iov = iov[:0]
					if err != nil {
						full <- chunk{err: err}
						return
					}
				}
				if mem == nil {
					var err error
					if mem, err = os.Open(procfs.Path(pid, "mem")); err != nil {
						full <- chunk{err: err}
						return
					}
				}
				if _, err := mem.ReadAt(buf[n:n+int(m)], int64(addr)); err != nil {
					full <- chunk{err: fmt.Errorf("read memory at %#x: %w", addr, err)}
					return
				}
			}
			n += int(m)
			addr += m
			left -= m
			// process_vm_readv takes at most IOV_MAX (1024) remote vectors.
			if n == len(buf) || len(iov) == 1024 {
				if !flush() {
					return
				}
			}
		}
	}
	flush()
}

func iovLen(iov []linux.RemoteIovec) int {
	s := 0
	for _, v := range iov {
		s += v.Len
	}
	return s
}

// writeShmem writes the content of each shared anonymous memory object once, read through
// /proc/PID/map_files of a process that maps it. Holes (never touched pages) are skipped.
func (d *dumper) writeShmem() error {
	for _, src := range d.shmemSrc {
		s := src.shm
		f, err := os.Open(procfs.Path(src.pid, fmt.Sprintf("map_files/%x-%x", src.start, src.end)))
		if err != nil {
			return fmt.Errorf("dump pid %d: open shared memory at %#x: %w", src.pid, src.start, err)
		}
		err = d.writeShmemFile(f, s)
		f.Close()
		if err != nil {
			return fmt.Errorf("dump pid %d: shared memory at %#x: %w", src.pid, src.start, err)
		}
	}
	return nil
}

func (d *dumper) writeShmemFile(f *os.File, s *imagepb.SharedMemory) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if size := (uint64(st.Size()) + linux.PageSize - 1) &^ (linux.PageSize - 1); size > s.Size {
		s.Size = size
	}
	fd := int(f.Fd())
	var off int64
	for uint64(off) < s.Size {
		data, err := linux.Seek(fd, off, linux.SeekData)
		if err != nil || uint64(data) >= s.Size {
			break // ENXIO: no data after off
		}
		hole, err := linux.Seek(fd, data, linux.SeekHole)
		if err != nil {
			return err
		}
		lo := data &^ (linux.PageSize - 1)
		hi := min((hole+linux.PageSize-1)&^(linux.PageSize-1), int64(s.Size))
		s.Runs = append(s.Runs, &imagepb.PageRun{Vaddr: uint64(lo), NrPages: uint64(hi-lo) / linux.PageSize})
		off = hi
	}
	if len(s.Runs) == 0 {
		return nil
	}
	name := image.ShmemName(s.Id)
	df, err := d.w.CreateData(name, 0)
	if err != nil {
		return err
	}
	defer df.Close()
	buf := make([]byte, 1<<20)
	for _, r := range s.Runs {
		off, left := int64(r.Vaddr), int64(r.NrPages*linux.PageSize)
		for left > 0 {
			m := min(left, int64(len(buf)))
			if _, err := f.ReadAt(buf[:m], off); err != nil {
				return err
			}
			if _, err := df.Write(buf[:m]); err != nil {
				return err
			}
			off += m
			left -= m
		}
	}
	s.PagesFile = name
	return nil
}
