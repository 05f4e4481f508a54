package core

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/procfs"
	"github.com/gocr/gocr/core/internal/tracer"
)

// atFdcwd is AT_FDCWD (-100) as a syscall argument.
const atFdcwd = ^uint64(99)

var unsafeSizeofCloneArgs = unsafe.Sizeof(cloneArgs{})

// structBytes views a fixed-layout struct as bytes.
func structBytes[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

func le32bytes(v uint32) []byte {
	b := make([]byte, 4)
	binary.LittleEndian.PutUint32(b, v)
	return b
}

func le64bytes(v ...uint64) []byte {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], x)
	}
	return b
}

func cstring(s string) []byte { return append([]byte(s), 0) }

// call runs one injected syscall and counts it.
func (r *restorer) call(p *procRestore, what string, nr int, args ...uint64) (uint64, error) {
	r.stats.Syscalls++
	v, err := p.t.Syscall(nr, args...)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	return v, nil
}

// arg writes b into the scratch area at off and returns its address in the process.
func (p *procRestore) arg(off uint64, b []byte) (uint64, error) {
	if uint64(len(b)) > scratchArgSz {
		return 0, fmt.Errorf("argument of %d bytes does not fit the scratch area", len(b))
	}
	return p.scratch + off, p.t.WriteMem(p.scratch+off, b)
}

// prctlMMMap is struct prctl_mm_map (linux/prctl.h), 104 bytes.
type prctlMMMap struct {
	StartCode, EndCode, StartData, EndData, StartBrk, Brk, StartStack uint64
	ArgStart, ArgEnd, EnvStart, EnvEnd                                uint64
	Auxv                                                              uint64
	AuxvSize                                                          uint32
	ExeFd                                                             uint32
}

// restoreAddressSpace turns a fresh copy of the stub into the dumped process's memory and
// fds, by syscalls run inside it; restoreState then puts back the rest, short of the final
// registers. Mappings claimed by plugins are made in between (restoreClaimedVMAs).
func (r *restorer) restoreAddressSpace(p *procRestore) error {
	if err := r.restoreMM(p); err != nil {
		return err
	}
	if err := r.restoreMemory(p); err != nil {
		return err
	}
	return r.installFds(p)
}

// restoreMM empties the address space but for the scratch area and the vdso, moves the vdso
// where it was, and sets the mm fields and exe link. PR_SET_MM_MAP must come before the dumped
// mappings exist: with the old exe still mapped it fails with EBUSY.
func (r *restorer) restoreMM(p *procRestore) error {
	pid := p.t.Pid
	maps, err := procfs.ReadSmaps(pid)
	if err != nil {
		return err
	}
	cur := map[string]procfs.Mapping{}
	for _, m := range maps {
		switch m.Path {
		case "[vdso]", "[vvar]", "[vvar_vclock]":
			cur[m.Path] = m
			continue
		case "[vsyscall]":
			continue
		}
		if m.Start == p.scratch {
			continue
		}
		if _, err := r.call(p, fmt.Sprintf("unmap stub mapping %#x", m.Start), linux.SysMunmap, m.Start, m.End-m.Start); err != nil {
			return err
		}
	}
	if err := r.moveVdso(p, cur); err != nil {
		return err
	}
	img := p.img
	exe, err := p.arg(scratchArg, cstring(img.Mm.Exe))
	if err != nil {
		return err
	}
	var exeFd uint64
	if id := img.Mm.ExeSavedFileId; id != 0 {
		exeFd, err = r.installTemp(p, r.saved[id]) // the binary was deleted
	} else {
		exeFd, err = r.call(p, "open exe "+img.Mm.Exe, linux.SysOpenat, atFdcwd, exe, linux.ORdonly|linux.OCloexec)
	}
	if err != nil {
		return err
	}
	auxv, err := p.arg(scratchArg2, img.Mm.Auxv)
	if err != nil {
		return err
	}
	mm := img.Mm
	m := prctlMMMap{
		StartCode: mm.StartCode, EndCode: mm.EndCode, StartData: mm.StartData, EndData: mm.EndData,
		StartBrk: mm.StartBrk, Brk: mm.Brk, StartStack: mm.StartStack,
		ArgStart: mm.ArgStart, ArgEnd: mm.ArgEnd, EnvStart: mm.EnvStart, EnvEnd: mm.EnvEnd,
		Auxv: auxv, AuxvSize: uint32(len(mm.Auxv)), ExeFd: uint32(exeFd),
	}
	ma, err := p.arg(scratchArg, structBytes(&m))
	if err != nil {
		return err
	}
	_, err = r.call(p, "set mm fields (prctl PR_SET_MM_MAP)", linux.SysPrctl, linux.PrSetMM, linux.PrSetMMMap, ma, uint64(unsafe.Sizeof(m)))
	if _, cerr := r.call(p, "close exe", linux.SysClose, exeFd); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// moveVdso moves [vvar], [vvar_vclock] and [vdso] to their dumped addresses, through a free
// area when the old and new places overlap. Same kernel only: the sizes must match.
func (r *restorer) moveVdso(p *procRestore, cur map[string]procfs.Mapping) error {
	type move struct {
		name          string
		from, to, len uint64
	}
	var moves []move
	var busy [][2]uint64
	for _, v := range p.img.Vmas {
		busy = append(busy, [2]uint64{v.Start, v.End})
		var name string
		switch v.Kind {
		case imagepb.VMAKind_VMA_KIND_VDSO:
			name = "[vdso]"
		case imagepb.VMAKind_VMA_KIND_VVAR:
			name = "[vvar]"
		case imagepb.VMAKind_VMA_KIND_VVAR_VCLOCK:
			name = "[vvar_vclock]"
		default:
			continue
		}
		m, ok := cur[name]
		if !ok || m.End-m.Start != v.End-v.Start {
			return fmt.Errorf("%s of the image does not fit this kernel's (restore on the kernel the image was taken on): %w", name, ErrIncompatible)
		}
		moves = append(moves, move{name, m.Start, v.Start, v.End - v.Start})
	}
	if len(moves) != len(cur) {
		return fmt.Errorf("the image's vdso mappings differ from this kernel's: %w", ErrIncompatible)
	}
	for _, m := range cur {
		busy = append(busy, [2]uint64{m.Start, m.End})
	}
	busy = append(busy, [2]uint64{p.scratch, p.scratch + scratchSize})
	var total uint64
	for _, m := range moves {
		total += m.len
	}
	hop := freeArea(busy, total)
	vdsoOff := uint64(0)
	for _, m := range moves {
		if m.name == "[vdso]" {
			vdsoOff = p.t.SyscallAddr - m.from
		}
	}
	// Two steps, each mapping to a place nothing else uses: all to the hop, then all home.
	off := uint64(0)
	for i := range moves {
		m := &moves[i]
		if m.from == m.to {
			continue
		}
		if _, err := r.call(p, "move "+m.name, linux.SysMremap, m.from, m.len, m.len, linux.MremapMaymove|linux.MremapFixed, hop+off); err != nil {
			return err
		}
		m.from = hop + off
		off += m.len
		if m.name == "[vdso]" {
			p.t.SyscallAddr = m.from + vdsoOff
		}
	}
	for _, m := range moves {
		if m.from == m.to {
			continue
		}
		if _, err := r.call(p, "move "+m.name, linux.SysMremap, m.from, m.len, m.len, linux.MremapMaymove|linux.MremapFixed, m.to); err != nil {
			return err
		}
		if m.name == "[vdso]" {
			p.t.SyscallAddr = m.to + vdsoOff
		}
	}
	return nil
}

// restoreMemory maps every dumped mapping at its address and fills it from the image with
// preadv run inside the process: one kernel copy from the page cache, no bounce buffer.
func (r *restorer) restoreMemory(p *procRestore) error {
	img := p.img
	fileFds := map[string]uint64{}
	defer func() {
		for _, fd := range fileFds {
			r.call(p, "close mapped file", linux.SysClose, fd)
		}
	}()
	openIn := func(path string, flags uint32) (uint64, error) {
		key := fmt.Sprintf("%d:%s", flags, path)
		if fd, ok := fileFds[key]; ok {
			return fd, nil
		}
		a, err := p.arg(scratchArg, cstring(path))
		if err != nil {
			return 0, err
		}
		fd, err := r.call(p, "open "+path, linux.SysOpenat, atFdcwd, a, uint64(flags)|linux.OCloexec)
		if err != nil {
			return 0, err
		}
		fileFds[key] = fd
		return fd, nil
	}
	pagesIn := func(name string) (uint64, error) {
		return r.installTemp(p, r.pages[name])
	}
	var shmemFills []*imagepb.VMA
	for _, v := range img.Vmas {
		what := fmt.Sprintf("map %#x-%#x", v.Start, v.End)
		length := v.End - v.Start
		prot := uint64(v.Prot)
		fill := uint64(linux.ProtRead | linux.ProtWrite)
		switch v.Kind {
		case imagepb.VMAKind_VMA_KIND_VDSO, imagepb.VMAKind_VMA_KIND_VVAR,
			imagepb.VMAKind_VMA_KIND_VVAR_VCLOCK, imagepb.VMAKind_VMA_KIND_VSYSCALL:
			continue
		case imagepb.VMAKind_VMA_KIND_ANON_PRIVATE, imagepb.VMAKind_VMA_KIND_HEAP, imagepb.VMAKind_VMA_KIND_STACK:
			flags := uint64(linux.MapPrivate | linux.MapAnonymous | linux.MapFixedNoreplace)
			if hasFlag(v, "gd") {
				flags |= linux.MapGrowsdown
			}
			if hasFlag(v, "nr") {
				flags |= linux.MapNoreserve
			}
			// Faulting pages in one by one during the fill costs more than populating a
			// mapping that will be mostly filled anyway.
			if 2*dumpedPages(img.Pages, v.Start, v.End) >= length/linux.PageSize {
				flags |= linux.MapPopulate
			}
			fd := ^uint64(0)
			if v.Path == "/dev/zero" {
				var err error
				if fd, err = openIn(v.Path, linux.ORdwr); err != nil {
					return err
				}
				flags &^= linux.MapAnonymous
			}
			if _, err := r.call(p, what, linux.SysMmap, v.Start, length, fill, flags, fd, 0); err != nil {
				return err
			}
		case imagepb.VMAKind_VMA_KIND_FILE_PRIVATE:
			fd, err := r.mappedFileIn(p, v, openIn, fileFds)
			if err != nil {
				return err
			}
			if _, err := r.call(p, what+" of "+v.Path, linux.SysMmap, v.Start, length, fill, linux.MapPrivate|linux.MapFixedNoreplace, fd, v.Pgoff); err != nil {
				return err
			}
		case imagepb.VMAKind_VMA_KIND_FILE_SHARED:
			fd, err := r.mappedFileIn(p, v, openIn, fileFds)
			if err != nil {
				return err
			}
			if _, err := r.call(p, what+" of "+v.Path, linux.SysMmap, v.Start, length, prot, linux.MapShared|linux.MapFixedNoreplace, fd, v.Pgoff); err != nil {
				return err
			}
			continue
		case imagepb.VMAKind_VMA_KIND_SYSV_SHM:
			// One shmat per attachment: its first mapping (offset 0) brings the whole segment.
			if v.Pgoff != 0 {
				continue
			}
			flags := uint64(0)
			if v.Prot&linux.ProtWrite == 0 {
				flags = linux.ShmRdonly
			}
			if _, err := r.call(p, what+fmt.Sprintf(" (System V shm %d)", v.SysvShmId), linux.SysShmat, uint64(v.SysvShmId), v.Start, flags); err != nil {
				return err
			}
			continue
		case imagepb.VMAKind_VMA_KIND_ANON_SHARED:
			owner, ok := r.shmem[v.ShmemId]
			if !ok {
				if v.Pgoff != 0 {
					return &UnsupportedError{Pid: p.t.Pid, What: what, Kind: "shared anonymous memory first mapped at an offset"}
				}
				if _, err := r.call(p, what, linux.SysMmap, v.Start, length, fill, linux.MapShared|linux.MapAnonymous|linux.MapFixedNoreplace, ^uint64(0), 0); err != nil {
					return err
				}
				if r.shmem == nil {
					r.shmem = map[uint32]shmemOwner{}
				}
				r.shmem[v.ShmemId] = shmemOwner{pid: int32(p.t.Pid), start: v.Start, end: v.End}
				shmemFills = append(shmemFills, v)
			} else {
				path := fmt.Sprintf("/proc/%d/map_files/%x-%x", owner.pid, owner.start, owner.end)
				fd, err := openIn(path, linux.ORdwr)
				if err != nil {
					return err
				}
				if _, err := r.call(p, what+" shared with pid "+fmt.Sprint(owner.pid), linux.SysMmap, v.Start, length, prot, linux.MapShared|linux.MapFixedNoreplace, fd, v.Pgoff); err != nil {
					return err
				}
				continue
			}
		}
	}
	if len(img.Pages) > 0 {
		fd, err := pagesIn(img.PagesFile)
		if err != nil {
			return err
		}
		var segs []seg
		for _, run := range img.Pages {
			segs = append(segs, seg{run.Vaddr, run.NrPages * linux.PageSize})
		}
		err = r.fill(p, fd, segs, 0)
		r.call(p, "close page file", linux.SysClose, fd)
		if err != nil {
			return fmt.Errorf("fill memory: %w", err)
		}
	}
	for _, v := range shmemFills {
		s := r.shmemByID(v.ShmemId)
		if s == nil || len(s.Runs) == 0 {
			continue
		}
		fd, err := pagesIn(s.PagesFile)
		if err != nil {
			return err
		}
		var segs []seg
		for _, run := range s.Runs {
			lo, hi := run.Vaddr, run.Vaddr+run.NrPages*linux.PageSize
			hi = min(hi, v.End-v.Start)
			if hi > lo {
				segs = append(segs, seg{v.Start + lo, hi - lo})
			}
		}
		err = r.fill(p, fd, segs, 0)
		r.call(p, "close shared memory file", linux.SysClose, fd)
		if err != nil {
			return fmt.Errorf("fill shared memory at %#x: %w", v.Start, err)
		}
	}
	// Final protection and advice.
	for _, v := range img.Vmas {
		switch v.Kind {
		case imagepb.VMAKind_VMA_KIND_ANON_PRIVATE, imagepb.VMAKind_VMA_KIND_HEAP, imagepb.VMAKind_VMA_KIND_STACK,
			imagepb.VMAKind_VMA_KIND_FILE_PRIVATE:
		case imagepb.VMAKind_VMA_KIND_ANON_SHARED:
			if r.shmem[v.ShmemId].start != v.Start || r.shmem[v.ShmemId].pid != int32(p.t.Pid) {
				continue
			}
		case imagepb.VMAKind_VMA_KIND_SYSV_SHM:
			attached := uint32(linux.ProtRead | linux.ProtWrite)
			if v.Prot&linux.ProtWrite == 0 {
				attached = linux.ProtRead
			}
			if v.Prot != attached {
				if _, err := r.call(p, fmt.Sprintf("protect %#x-%#x", v.Start, v.End), linux.SysMprotect, v.Start, v.End-v.Start, uint64(v.Prot)); err != nil {
					return err
				}
			}
			continue
		default:
			continue
		}
		if v.Prot != linux.ProtRead|linux.ProtWrite {
			if _, err := r.call(p, fmt.Sprintf("protect %#x-%#x", v.Start, v.End), linux.SysMprotect, v.Start, v.End-v.Start, uint64(v.Prot)); err != nil {
				return err
			}
		}
		for _, a := range []struct {
			flag   string
			advice int
		}{{"dc", linux.MadvDontfork}, {"dd", linux.MadvDontdump}, {"hg", linux.MadvHugepage}, {"nh", linux.MadvNohugepage}, {"wf", linux.MadvWipeonfork}} {
			if hasFlag(v, a.flag) {
				if _, err := r.call(p, fmt.Sprintf("advise %#x", v.Start), linux.SysMadvise, v.Start, v.End-v.Start, uint64(a.advice)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// mappedFileIn returns an fd of the file v maps, inside the process: opened by its path, or
// for a file without a path, taken from gocr's recreated copy.
func (r *restorer) mappedFileIn(p *procRestore, v *imagepb.VMA, openIn func(string, uint32) (uint64, error), fds map[string]uint64) (uint64, error) {
	if v.SavedFileId == 0 {
		flags := uint32(linux.ORdonly)
		if v.Kind == imagepb.VMAKind_VMA_KIND_FILE_SHARED {
			flags = v.FileFlags
		}
		return openIn(v.Path, flags)
	}
	key := fmt.Sprintf("saved:%d", v.SavedFileId)
	if fd, ok := fds[key]; ok {
		return fd, nil
	}
	fd, err := r.installTemp(p, r.saved[v.SavedFileId])
	if err != nil {
		return 0, err
	}
	fds[key] = fd
	return fd, nil
}

func (r *restorer) shmemByID(id uint32) *imagepb.SharedMemory {
	for _, s := range r.c.Tree.Shmem {
		if s.Id == id {
			return s
		}
	}
	return nil
}

func hasFlag(v *imagepb.VMA, f string) bool {
	for _, x := range v.VmFlags {
		if x == f {
			return true
		}
	}
	return false
}

type seg struct{ addr, len uint64 }

// dumpedPages counts the pages of runs inside [start, end).
func dumpedPages(runs []*imagepb.PageRun, start, end uint64) uint64 {
	var n uint64
	for _, r := range runs {
		lo, hi := max(r.Vaddr, start), min(r.Vaddr+r.NrPages*linux.PageSize, end)
		if hi > lo {
			n += (hi - lo) / linux.PageSize
		}
	}
	return n
}

// maxPreadv keeps one preadv below the kernel's 2 GiB MAX_RW_COUNT.
const maxPreadv = 1 << 30

// fill reads the segments, stored one after the other from offset off of the file fd (an fd
// of the process), into the process's memory with preadv run inside it.
func (r *restorer) fill(p *procRestore, fd uint64, segs []seg, off uint64) error {
	iov := make([]byte, 0, maxIov*16)
	for len(segs) > 0 {
		iov = iov[:0]
		var n, total uint64
		for _, s := range segs {
			if n == maxIov || total >= maxPreadv {
				break
			}
			l := min(s.len, maxPreadv-total)
			iov = binary.LittleEndian.AppendUint64(iov, s.addr)
			iov = binary.LittleEndian.AppendUint64(iov, l)
			n++
			total += l
		}
		if err := p.t.WriteMem(p.scratch+scratchIov, iov); err != nil {
			return err
		}
		got, err := r.call(p, "preadv", linux.SysPreadv, fd, p.scratch+scratchIov, n, off, 0)
		if err != nil {
			return err
		}
		if got == 0 {
			return fmt.Errorf("preadv: page file ends early at offset %d", off)
		}
		r.stats.Bytes += got
		if r.opts.Progress != nil {
			r.opts.Progress(Progress{Stage: "memory", Done: r.stats.Bytes, Total: r.total})
		}
		if r.ctx.Err() != nil {
			return fmt.Errorf("restore: %w", ErrInterrupted)
		}
		off += got
		// Drop what was read.
		for got > 0 {
			if got >= segs[0].len {
				got -= segs[0].len
				segs = segs[1:]
			} else {
				segs[0].addr += got
				segs[0].len -= got
				got = 0
			}
		}
	}
	return nil
}

// gocrPidfd returns a pidfd of gocr inside the process, through which the process takes
// fds from gocr with pidfd_getfd (same open file description, flags and offset).
func (r *restorer) gocrPidfd(p *procRestore) (uint64, error) {
	if p.pidfd != ^uint64(0) {
		return p.pidfd, nil
	}
	fd, err := r.call(p, "pidfd_open(gocr)", linux.SysPidfdOpen, uint64(os.Getpid()), 0)
	if err != nil {
		return 0, err
	}
	p.pidfd = fd
	return fd, nil
}

// installTemp gives the process a dup of our fd at the lowest free number (close-on-exec).
func (r *restorer) installTemp(p *procRestore, ours int) (uint64, error) {
	pidfd, err := r.gocrPidfd(p)
	if err != nil {
		return 0, err
	}
	return r.call(p, "take fd from gocr", linux.SysPidfdGetfd, pidfd, uint64(ours), 0)
}

// installFds closes whatever the stub left open and installs every dumped fd at its number.
func (r *restorer) installFds(p *procRestore) error {
	fds := p.img.Fds
	maxFd := int32(2)
	for _, f := range fds {
		maxFd = max(maxFd, f.Fd)
	}
	// Move our pidfd above every fd number to be installed, and close everything else.
	pidfd, err := r.gocrPidfd(p)
	if err != nil {
		return err
	}
	high, err := r.call(p, "move pidfd", linux.SysFcntl, pidfd, 1030 /* F_DUPFD_CLOEXEC */, uint64(maxFd+1))
	if err != nil {
		return err
	}
	if _, err := r.call(p, "close stub fds", linux.SysCloseRange, 0, high-1, 0); err != nil {
		return err
	}
	if high < ^uint64(0) {
		if _, err := r.call(p, "close stub fds", linux.SysCloseRange, high+1, ^uint64(0)>>32, 0); err != nil {
			return err
		}
	}
	p.pidfd = high
	// Ascending: the lowest free number is never above the one being installed.
	for _, f := range fds {
		ours, ok := r.files[f.FileId]
		if !ok {
			return fmt.Errorf("fd %d: file %d was not opened", f.Fd, f.FileId)
		}
		got, err := r.call(p, fmt.Sprintf("install fd %d", f.Fd), linux.SysPidfdGetfd, high, uint64(ours), 0)
		if err != nil {
			return err
		}
		if got != uint64(f.Fd) {
			flags := uint64(0)
			if f.Cloexec {
				flags = linux.OCloexec
			}
			if _, err := r.call(p, fmt.Sprintf("install fd %d", f.Fd), linux.SysDup3, got, uint64(f.Fd), flags); err != nil {
				return err
			}
			if _, err := r.call(p, "close", linux.SysClose, got); err != nil {
				return err
			}
		} else if !f.Cloexec {
			if _, err := r.call(p, fmt.Sprintf("clear close-on-exec of fd %d", f.Fd), linux.SysFcntl, got, linux.FSetfd, 0); err != nil {
				return err
			}
		}
	}
	return r.fillEpolls(p)
}

// fillEpolls adds the watched fds to each epoll instance, from inside the first process that
// holds it: an epoll item is keyed by the fd number in the process that added it.
func (r *restorer) fillEpolls(p *procRestore) error {
	have := map[int32]bool{}
	for _, f := range p.img.Fds {
		have[f.Fd] = true
	}
	for _, f := range p.img.Fds {
		of := r.fileByID(f.FileId)
		if of.Kind != imagepb.FileKind_FILE_KIND_EPOLL || r.epollDone[of.Id] {
			continue
		}
		if r.epollDone == nil {
			r.epollDone = map[uint32]bool{}
		}
		r.epollDone[of.Id] = true
		for _, it := range of.EpollItems {
			if !have[it.Tfd] {
				return &UnsupportedError{Pid: p.t.Pid, What: fmt.Sprintf("fd %d", f.Fd), Kind: fmt.Sprintf("epoll watching fd %d of another process", it.Tfd)}
			}
			// struct epoll_event is packed on x86_64: u32 events, u64 data.
			ev := make([]byte, 12)
			binary.LittleEndian.PutUint32(ev, it.Events)
			binary.LittleEndian.PutUint64(ev[4:], it.Data)
			a, err := p.arg(scratchArg, ev)
			if err != nil {
				return err
			}
			if _, err := r.call(p, fmt.Sprintf("epoll fd %d: watch fd %d", f.Fd, it.Tfd), linux.SysEpollCtl, uint64(f.Fd), linux.EpollCtlAdd, uint64(it.Tfd), a); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *restorer) fileByID(id uint32) *imagepb.OpenFile {
	for _, f := range r.c.Tree.Files {
		if f.Id == id {
			return f
		}
	}
	return nil
}

// restoreState puts back the rest of the per-process state: cwd, root, umask, limits,
// signal actions, timers, futex and rseq registrations, name, credentials, pending signals.
func (r *restorer) restoreState(p *procRestore) error {
	img, pid := p.img, p.t.Pid
	path := func(s string) (uint64, error) { return p.arg(scratchArg, cstring(s)) }
	if img.Root != "/" {
		a, err := path(img.Root)
		if err != nil {
			return err
		}
		if _, err := r.call(p, "chroot "+img.Root, linux.SysChroot, a); err != nil {
			return err
		}
	}
	a, err := path(img.Cwd)
	if err != nil {
		return err
	}
	if _, err := r.call(p, "chdir "+img.Cwd, linux.SysChdir, a); err != nil {
		return err
	}
	if _, err := r.call(p, "umask", linux.SysUmask, uint64(img.Umask)); err != nil {
		return err
	}
	if err := r.restoreLimits(p); err != nil {
		return err
	}
	if err := r.restoreSignals(p); err != nil {
		return err
	}
	for _, it := range img.Itimers {
		// A periodic timer whose signal was pending at the dump reads as 0 left (the kernel
		// re-arms it when the signal is taken): arm it to fire at once, or it would stop.
		value := it.ValueUsec
		if value == 0 && it.IntervalUsec != 0 {
			value = 1
		}
		v := le64bytes(uint64(it.IntervalUsec/1e6), uint64(it.IntervalUsec%1e6), uint64(value/1e6), uint64(value%1e6))
		a, err := p.arg(scratchArg, v)
		if err != nil {
			return err
		}
		if _, err := r.call(p, fmt.Sprintf("set itimer %d", it.Which), linux.SysSetitimer, uint64(it.Which), a, 0); err != nil {
			return err
		}
	}
	if _, err := r.call(p, "set_tid_address", linux.SysSetTidAddress, img.TidAddress); err != nil {
		return err
	}
	if img.RobustList != 0 {
		if _, err := r.call(p, "set_robust_list", linux.SysSetRobustList, img.RobustList, img.RobustListLen); err != nil {
			return err
		}
	}
	if rs := img.Rseq; rs != nil {
		if _, err := r.call(p, "register rseq", linux.SysRseq, rs.AbiPointer, uint64(rs.AbiSize), 0, uint64(rs.Signature)); err != nil {
			return err
		}
	}
	if img.Personality != 0 {
		if _, err := r.call(p, "personality", linux.SysPersonality, uint64(img.Personality)); err != nil {
			return err
		}
	}
	if img.Pdeathsig != 0 {
		if _, err := r.call(p, "set parent death signal", linux.SysPrctl, linux.PrSetPdeathsig, uint64(img.Pdeathsig)); err != nil {
			return err
		}
	}
	comm := []byte(img.Comm)
	if len(comm) > 15 {
		comm = comm[:15]
	}
	if a, err = path(string(comm)); err != nil {
		return err
	}
	if _, err := r.call(p, "set name", linux.SysPrctl, linux.PrSetName, a); err != nil {
		return err
	}
	if img.Creds.NoNewPrivs {
		if _, err := r.call(p, "set no_new_privs", linux.SysPrctl, linux.PrSetNoNewPrivs, 1, 0, 0, 0); err != nil {
			return err
		}
	}
	// Threads are made now, while the main thread may still use clone3 with set_tid; each
	// then takes the credentials itself (they are per thread).
	if err := r.createThreads(p); err != nil {
		return err
	}
	if err := r.restoreTimers(p); err != nil {
		return err
	}
	// Seccomp filters: the threads made above have them already if they were made after
	// them, so install them before the credentials change, in the order they were.
	if err := r.restoreSeccomp(p); err != nil {
		return err
	}
	if err := r.restoreCreds(p); err != nil {
		return err
	}
	for _, th := range p.threads {
		if err := r.restoreCreds(th.view(p)); err != nil {
			return fmt.Errorf("thread %d: %w", th.img.Tid, err)
		}
		if err := r.queueThreadSignals(p, th); err != nil {
			return fmt.Errorf("thread %d: %w", th.img.Tid, err)
		}
	}
	// Pending signals last, with every signal blocked: they stay queued until the real mask
	// is set and the process runs.
	for _, s := range img.Pending {
		a, err := p.arg(scratchArg, s.Info)
		if err != nil {
			return err
		}
		if s.Shared {
			_, err = r.call(p, fmt.Sprintf("queue signal %d", s.Signo), linux.SysRtSigqueueinfo, uint64(pid), uint64(s.Signo), a)
		} else {
			_, err = r.call(p, fmt.Sprintf("queue signal %d", s.Signo), linux.SysRtTgsigqueue, uint64(pid), uint64(pid), uint64(s.Signo), a)
		}
		if err != nil {
			return err
		}
	}
	if _, err := r.call(p, "close pidfd", linux.SysClose, p.pidfd); err != nil {
		return err
	}
	p.pidfd = ^uint64(0)
	if _, err := r.call(p, "unmap scratch area", linux.SysMunmap, p.scratch, scratchSize); err != nil {
		return err
	}
	return nil
}

// restoreTimers makes the POSIX timers again under their IDs (PR_TIMER_CREATE_RESTORE_IDS),
// armed with the time they had left; after the threads, which a timer may notify.
func (r *restorer) restoreTimers(p *procRestore) error {
	if len(p.img.PosixTimers) == 0 {
		return nil
	}
	if _, err := r.call(p, "allow timer IDs (PR_TIMER_CREATE_RESTORE_IDS, Linux 6.17)", linux.SysPrctl, linux.PrTimerCreateRestoreIDs, 1, 0, 0, 0); err != nil {
		return err
	}
	for _, pt := range p.img.PosixTimers {
		// struct sigevent: sigev_value, sigev_signo, sigev_notify, then the union with _tid.
		ev := make([]byte, 72)
		binary.LittleEndian.PutUint64(ev[0:], pt.SigevValue)
		binary.LittleEndian.PutUint32(ev[8:], uint32(pt.Signo))
		binary.LittleEndian.PutUint32(ev[12:], uint32(pt.Notify))
		binary.LittleEndian.PutUint32(ev[16:], uint32(pt.NotifyTid))
		binary.LittleEndian.PutUint32(ev[64:], uint32(pt.Id)) // the ID asked for
		a, err := p.arg(scratchArg, ev)
		if err != nil {
			return err
		}
		if _, err := r.call(p, fmt.Sprintf("make POSIX timer %d", pt.Id), linux.SysTimerCreate, uint64(pt.Clockid), a, a+64); err != nil {
			return err
		}
		got := make([]byte, 4)
		if err := p.t.ReadMem(a+64, got); err != nil {
			return err
		}
		if id := int32(binary.LittleEndian.Uint32(got)); id != pt.Id {
			return fmt.Errorf("POSIX timer %d came back as %d", pt.Id, id)
		}
		value := pt.ValueNs
		if value == 0 && pt.IntervalNs != 0 {
			value = 1 // pending at the dump: see the interval timers in restoreState
		}
		its := le64bytes(uint64(pt.IntervalNs/1e9), uint64(pt.IntervalNs%1e9), uint64(value/1e9), uint64(value%1e9))
		if a, err = p.arg(scratchArg, its); err != nil {
			return err
		}
		if _, err := r.call(p, fmt.Sprintf("arm POSIX timer %d", pt.Id), linux.SysTimerSettime, uint64(pt.Id), 0, a, 0); err != nil {
			return err
		}
	}
	_, err := r.call(p, "stop choosing timer IDs", linux.SysPrctl, linux.PrTimerCreateRestoreIDs, 0, 0, 0, 0)
	return err
}

// restoreSeccomp installs the process's seccomp filters, oldest first. The tracee keeps
// running injected syscalls: PTRACE_O_SUSPEND_SECCOMP is set on it.
func (r *restorer) restoreSeccomp(p *procRestore) error {
	targets := []*procRestore{p}
	for _, th := range p.threads {
		targets = append(targets, th.view(p))
	}
	for _, prog := range p.img.SeccompFilters {
		if len(prog) == 0 || len(prog)%8 != 0 || len(prog) > scratchSize-scratchProg-16 {
			return fmt.Errorf("seccomp filter of %d bytes", len(prog))
		}
		// Each thread has its filters; all of the process's threads had these.
		for _, t := range targets {
			if err := t.t.WriteMem(t.scratch+scratchProg+16, prog); err != nil {
				return err
			}
			// struct sock_fprog: u16 len, pad, then the filter pointer.
			fprog := make([]byte, 16)
			binary.LittleEndian.PutUint16(fprog, uint16(len(prog)/8))
			binary.LittleEndian.PutUint64(fprog[8:], t.scratch+scratchProg+16)
			if err := t.t.WriteMem(t.scratch+scratchProg, fprog); err != nil {
				return err
			}
			if _, err := r.call(t, "install seccomp filter", linux.SysSeccomp, linux.SeccompSetModeFilter, 0, t.scratch+scratchProg); err != nil {
				return err
			}
		}
	}
	return nil
}

// threadRestore is a thread other than the main one.
type threadRestore struct {
	img *imagepb.Thread
	t   *tracer.Tracee
}

// view lets the per-process helpers (call, arg) act on the thread.
func (th *threadRestore) view(p *procRestore) *procRestore {
	return &procRestore{img: p.img, entry: p.entry, t: th.t, scratch: p.scratch, pidfd: ^uint64(0)}
}

// Clone flags of a thread as pthread_create makes it (linux/sched.h).
const cloneThreadFlags = 0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x40000 // VM FS FILES SIGHAND THREAD SYSVSEM

// createThreads makes every other thread with its old TID by clone3 run in the main thread,
// and gives each its own state: tid address, robust list, rseq, sigaltstack, name.
func (r *restorer) createThreads(p *procRestore) error {
	for _, ti := range p.img.Threads {
		tid := ti.Tid
		setTid := p.scratch + scratchArg + 128
		args := cloneArgs{Flags: cloneThreadFlags, SetTid: setTid, SetTidSize: 1}
		if err := p.t.WriteMem(p.scratch+scratchArg, structBytes(&args)); err != nil {
			return err
		}
		if err := p.t.WriteMem(setTid, le32bytes(uint32(tid))); err != nil {
			return err
		}
		got, err := r.call(p, fmt.Sprintf("make thread %d", tid), linux.SysClone3, p.scratch+scratchArg, uint64(unsafeSizeofCloneArgs))
		if errors.Is(err, linux.EEXIST) {
			return fmt.Errorf("thread %d: %w", tid, ErrPidInUse)
		}
		if err != nil {
			return err
		}
		if int32(got) != tid {
			return fmt.Errorf("thread %d: clone3 made %d", tid, got)
		}
		if err := tracer.WaitStopped(int(tid)); err != nil {
			return fmt.Errorf("thread %d: %w", tid, err)
		}
		t, err := tracer.Adopt(int(tid))
		if err != nil {
			return fmt.Errorf("thread %d: %w", tid, err)
		}
		t.SyscallAddr = p.t.SyscallAddr
		th := &threadRestore{img: ti, t: t}
		p.threads = append(p.threads, th)
		if err := r.threadState(p, th); err != nil {
			return fmt.Errorf("thread %d: %w", tid, err)
		}
	}
	return nil
}

func (r *restorer) threadState(p *procRestore, th *threadRestore) error {
	v, img := th.view(p), th.img
	if _, err := r.call(v, "set_tid_address", linux.SysSetTidAddress, img.TidAddress); err != nil {
		return err
	}
	if img.RobustList != 0 {
		if _, err := r.call(v, "set_robust_list", linux.SysSetRobustList, img.RobustList, img.RobustListLen); err != nil {
			return err
		}
	}
	if rs := img.Rseq; rs != nil {
		if _, err := r.call(v, "register rseq", linux.SysRseq, rs.AbiPointer, uint64(rs.AbiSize), 0, uint64(rs.Signature)); err != nil {
			return err
		}
	}
	if as := img.Altstack; as != nil && as.Sp != 0 {
		a, err := v.arg(scratchArg, le64bytes(as.Sp, uint64(uint32(as.Flags)), as.Size))
		if err != nil {
			return err
		}
		if _, err := r.call(v, "set sigaltstack", linux.SysSigaltstack, a, 0); err != nil {
			return err
		}
	}
	comm := img.Comm
	if len(comm) > 15 {
		comm = comm[:15]
	}
	a, err := v.arg(scratchArg, cstring(comm))
	if err != nil {
		return err
	}
	_, err = r.call(v, "set name", linux.SysPrctl, linux.PrSetName, a)
	return err
}

// queueThreadSignals queues the signals directed at one thread, from that thread: the kernel
// lets a thread queue a signal with any si_code only to itself.
func (r *restorer) queueThreadSignals(p *procRestore, th *threadRestore) error {
	v := th.view(p)
	for _, s := range th.img.Pending {
		a, err := v.arg(scratchArg, s.Info)
		if err != nil {
			return err
		}
		if _, err := r.call(v, fmt.Sprintf("queue signal %d", s.Signo), linux.SysRtTgsigqueue, uint64(p.t.Pid), uint64(th.img.Tid), uint64(s.Signo), a); err != nil {
			return err
		}
	}
	return nil
}

func (r *restorer) restoreLimits(p *procRestore) error {
	cur, err := procfs.ReadLimits(p.t.Pid)
	if err != nil {
		return err
	}
	for _, l := range p.img.Rlimits {
		c := cur[l.Resource]
		if c.Cur == l.Cur && c.Max == l.Max {
			continue
		}
		a, err := p.arg(scratchArg, le64bytes(l.Cur, l.Max))
		if err != nil {
			return err
		}
		if _, err := r.call(p, "set rlimit "+limitName(int(l.Resource)), linux.SysPrlimit64, 0, uint64(l.Resource), a, 0); err != nil {
			if errors.Is(err, linux.EPERM) && l.Max > c.Max {
				return fmt.Errorf("rlimit %s: hard limit %d is above gocr's %d and raising it needs CAP_SYS_RESOURCE: %w", limitName(int(l.Resource)), l.Max, c.Max, ErrPermission)
			}
			return err
		}
	}
	return nil
}

func limitName(res int) string {
	names := []string{"CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE", "MEMLOCK", "AS", "LOCKS", "SIGPENDING", "MSGQUEUE", "NICE", "RTPRIO", "RTTIME"}
	if res >= 0 && res < len(names) {
		return "RLIMIT_" + names[res]
	}
	return fmt.Sprint(res)
}

func (r *restorer) restoreSignals(p *procRestore) error {
	set := map[int32]bool{}
	for _, sa := range p.img.Sigactions {
		set[sa.Signo] = true
		a, err := p.arg(scratchArg, le64bytes(sa.Handler, sa.Flags, sa.Restorer, sa.Mask))
		if err != nil {
			return err
		}
		if _, err := r.call(p, fmt.Sprintf("set action of signal %d", sa.Signo), linux.SysRtSigaction, uint64(sa.Signo), a, 0, 8); err != nil {
			return err
		}
	}
	// Signals the stub ignored (exec keeps SIG_IGN) but the process did not.
	st, err := procfs.ReadStatus(p.t.Pid)
	if err != nil {
		return err
	}
	for sig := int32(1); sig <= 64; sig++ {
		if st.SigIgn&(1<<(sig-1)) == 0 || set[sig] {
			continue
		}
		a, err := p.arg(scratchArg, le64bytes(0, 0, 0, 0))
		if err != nil {
			return err
		}
		if _, err := r.call(p, fmt.Sprintf("reset action of signal %d", sig), linux.SysRtSigaction, uint64(sig), a, 0, 8); err != nil {
			return err
		}
	}
	if as := p.img.Altstack; as != nil && as.Sp != 0 {
		b := le64bytes(as.Sp, uint64(uint32(as.Flags)), as.Size)
		a, err := p.arg(scratchArg, b)
		if err != nil {
			return err
		}
		if _, err := r.call(p, "set sigaltstack", linux.SysSigaltstack, a, 0); err != nil {
			return err
		}
	}
	return nil
}

func (r *restorer) restoreCreds(p *procRestore) error {
	c := p.img.Creds
	if len(c.Groups) > 0 || c.Gids[0] != 0 {
		b := make([]byte, 0, 4*len(c.Groups))
		for _, g := range c.Groups {
			b = binary.LittleEndian.AppendUint32(b, g)
		}
		a := p.scratch + scratchArg
		if len(b) > 0 {
			var err error
			if a, err = p.arg(scratchArg, b); err != nil {
				return err
			}
		}
		if _, err := r.call(p, "setgroups", linux.SysSetgroups, uint64(len(c.Groups)), a); err != nil {
			return err
		}
	}
	if c.Gids[0] != 0 || c.Gids[1] != 0 || c.Gids[2] != 0 {
		if _, err := r.call(p, "setresgid", linux.SysSetresgid, uint64(c.Gids[0]), uint64(c.Gids[1]), uint64(c.Gids[2])); err != nil {
			return err
		}
	}
	if c.Uids[0] != 0 || c.Uids[1] != 0 || c.Uids[2] != 0 {
		if _, err := r.call(p, "setresuid", linux.SysSetresuid, uint64(c.Uids[0]), uint64(c.Uids[1]), uint64(c.Uids[2])); err != nil {
			return err
		}
	}
	return nil
}

// finalRegs sets the dumped registers and XSTATE and the real signal mask. An interrupted
// syscall is restarted (or fails with EINTR where the kernel's restart block was needed).
func (r *restorer) finalRegs(p *procRestore) error {
	for _, th := range p.threads {
		if err := r.finalThreadRegs(th.t.Pid, th.img.Regs, th.img.Xstate, th.img.Sigmask); err != nil {
			return fmt.Errorf("thread %d: %w", th.t.Pid, err)
		}
	}
	return r.finalThreadRegs(p.t.Pid, p.img.Regs, p.img.Xstate, p.img.Sigmask)
}

func (r *restorer) finalThreadRegs(pid int, ri *imagepb.Regs, xstate []byte, mask uint64) error {
	regs := regsFromImage(ri)
	tracer.NormalizeRestart(&regs, false)
	if err := linux.SetXState(pid, xstate); err != nil {
		return err
	}
	if err := linux.SetRegs(pid, &regs); err != nil {
		return err
	}
	if err := linux.SetAffinity(pid, r.mask); err != nil {
		return err
	}
	return linux.SetSigMask(pid, mask)
}
