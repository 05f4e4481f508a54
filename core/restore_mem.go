package core

import (
	"encoding/binary"
	"fmt"
	"golang.org/x/sys/unix"
	"os"
	"sort"
	"unsafe"

	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/procfs"
)

// prctlMMMap is struct prctl_mm_map (linux/prctl.h), 104 bytes.
type prctlMMMap struct {
	StartCode, EndCode, StartData, EndData, StartBrk, Brk, StartStack uint64
	ArgStart, ArgEnd, EnvStart, EnvEnd                                uint64
	Auxv                                                              uint64
	AuxvSize                                                          uint32
	ExeFd                                                             uint32
}

// restoreAddressSpace turns a fresh copy of the stub into the dumped process's memory, by
// syscalls run inside it. Then the plugins make their files and mappings (restorePluginFiles,
// restoreClaimedVMAs), installFds puts every fd at its number, and restoreState puts back the
// rest, short of the final registers.
func (r *restorer) restoreAddressSpace(p *procRestore) error {
	if err := r.restoreMM(p); err != nil {
		return err
	}
	return r.restoreMemory(p)
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
	// shmemFills are the shared memory objects this process makes and fills through the
	// mapping at base, which starts at object offset 0 and covers it whole.
	type shmemFill struct {
		id   uint32
		base uint64
	}
	var shmemFills []shmemFill
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
			// mapping that will be mostly filled anyway (not one to be served lazily: its
			// pages must be missing).
			// A large one is filled by two copiers at once (fillParallel), which fault its
			// pages in on both cores.
			if dumped := dumpedPages(img.Pages, v.Start, v.End); 2*dumped >= length/linux.PageSize && dumped*linux.PageSize < parallelFill && !r.lazyVMA(v) {
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
				s := r.shmemByID(v.ShmemId)
				size := uint64(0)
				if s != nil {
					size = s.Size
				}
				if v.Pgoff == 0 && length >= size {
					if _, err := r.call(p, what, linux.SysMmap, v.Start, length, fill, linux.MapShared|linux.MapAnonymous|linux.MapFixedNoreplace, ^uint64(0), 0); err != nil {
						return err
					}
					shmemFills = append(shmemFills, shmemFill{id: v.ShmemId, base: v.Start})
				} else {
					// The mapping is a part of the object (mapped at an offset, or shorter than
					// what other mappings see): gocr makes and fills the whole object, and the
					// process maps its part.
					obj, err := r.makeShmem(s)
					if err != nil {
						return fmt.Errorf("%s: %w", what, err)
					}
					fd, err := r.installTemp(p, obj)
					linux.Close(obj)
					if err != nil {
						return err
					}
					_, err = r.call(p, what, linux.SysMmap, v.Start, length, fill, linux.MapShared|linux.MapFixedNoreplace, fd, v.Pgoff)
					r.call(p, "close shared object", linux.SysClose, fd)
					if err != nil {
						return err
					}
				}
				if r.shmem == nil {
					r.shmem = map[uint32]shmemOwner{}
				}
				r.shmem[v.ShmemId] = shmemOwner{pid: int32(p.t.Pid), start: v.Start, end: v.End}
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
		srcs, err := r.pageSources(img.Pid)
		if err != nil {
			return err
		}
		if r.lazy != nil {
			if srcs, err = r.registerLazy(p, srcs); err != nil {
				return fmt.Errorf("lazy pages: %w", err)
			}
		}
		// One preadv series per stretch of one page file read in order.
		for len(srcs) > 0 {
			k := 1
			for k < len(srcs) && srcs[k].file == srcs[0].file && srcs[k].off == srcs[k-1].off+srcs[k-1].len {
				k++
			}
			segs := make([]seg, k)
			for i, s := range srcs[:k] {
				segs[i] = seg{s.addr, s.len}
			}
			if dr := r.decoded[srcs[0].file]; dr != nil {
				if err := r.fillDecoded(p, dr, segs, srcs[0].off); err != nil {
					return fmt.Errorf("fill memory: %w", err)
				}
				srcs = srcs[k:]
				continue
			}
			fd, err := pagesIn(srcs[0].file)
			if err != nil {
				return err
			}
			err = r.fillParallel(p, r.pages[srcs[0].file], fd, segs, srcs[0].off)
			r.call(p, "close page file", linux.SysClose, fd)
			if err != nil {
				return fmt.Errorf("fill memory: %w", err)
			}
			srcs = srcs[k:]
		}
	}
	for _, sf := range shmemFills {
		s := r.shmemByID(sf.id)
		if s != nil && len(s.Runs) > 0 {
			fd, err := pagesIn(s.PagesFile)
			if err != nil {
				return err
			}
			var segs []seg
			for _, run := range s.Runs {
				lo, hi := run.Vaddr, min(run.Vaddr+run.NrPages*linux.PageSize, s.Size)
				if hi > lo {
					segs = append(segs, seg{sf.base + lo, hi - lo})
				}
			}
			err = r.fill(p, fd, segs, 0)
			r.call(p, "close shared memory file", linux.SysClose, fd)
			if err != nil {
				return fmt.Errorf("fill shared memory at %#x: %w", sf.base, err)
			}
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
	return r.lockMemory(p)
}

// lockMemory locks the mappings that were locked (mlock, mlock2 with MLOCK_ONFAULT), once
// their content is in place.
func (r *restorer) lockMemory(p *procRestore) error {
	for _, v := range p.img.Vmas {
		if !hasFlag(v, "lo") || v.Kind == imagepb.VMAKind_VMA_KIND_PLUGIN || v.Kind == imagepb.VMAKind_VMA_KIND_VDSO || v.Kind == imagepb.VMAKind_VMA_KIND_VVAR {
			continue
		}
		flags := uint64(0)
		if hasFlag(v, "lf") {
			flags = linux.MlockOnfault
		}
		if _, err := r.call(p, fmt.Sprintf("lock %#x-%#x", v.Start, v.End), linux.SysMlock2, v.Start, v.End-v.Start, flags); err != nil {
			return err
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

// pageSource is a stretch of a process's memory and where its content is: a page file
// (r.pages key) at an offset.
type pageSource struct {
	file           string
	off, addr, len uint64
	// ck is the image whose page file it is, and name the file's name there; level is how
	// far up the chain it is (0: the image itself, whose pages were written last).
	ck    *image.Checkpoint
	name  string
	level int
}

// pageSources says where every dumped page of process pid is: in this image's page file, or,
// for runs marked in the parent, in the first image up the chain that holds them. The result
// is ordered by file and offset, so that each file is read front to back.
func (r *restorer) pageSources(pid int32) ([]pageSource, error) {
	return pageSources(append([]*image.Checkpoint{r.c}, r.parents...), pid)
}

// pageSources is restorer.pageSources for an image and its parents, nearest first.
func pageSources(chain []*image.Checkpoint, pid int32) ([]pageSource, error) {
	var out []pageSource
	var want []span // what the previous level left to the parents; nil at the top
	for level, ck := range chain {
		proc := ck.Procs[pid]
		if proc == nil {
			return nil, fmt.Errorf("parent image %s does not hold the process: %w", ck.Dir, image.ErrCorrupt)
		}
		key := proc.PagesFile
		if level > 0 {
			key = ck.Path(proc.PagesFile)
		}
		var next []span
		var found uint64
		off := uint64(0)
		for _, run := range proc.Pages {
			lo, hi := run.Vaddr, run.Vaddr+run.NrPages*linux.PageSize
			parts := []span{{lo, hi}}
			if level > 0 {
				parts = intersect(want, lo, hi)
			}
			for _, s := range parts {
				found += s.hi - s.lo
				if run.InParent {
					next = append(next, s)
				} else {
					out = append(out, pageSource{file: key, off: off + s.lo - lo, addr: s.lo, len: s.hi - s.lo, ck: ck, name: proc.PagesFile, level: level})
				}
			}
			if !run.InParent {
				off += hi - lo
			}
		}
		if level > 0 && found != spansLen(want) {
			return nil, fmt.Errorf("%w (%s): %w", errNoParentPage, ck.Dir, image.ErrCorrupt)
		}
		if want = next; len(want) == 0 {
			break
		}
	}
	if len(want) > 0 {
		return nil, fmt.Errorf("%w: %w", errNoParentPage, image.ErrCorrupt)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].file != out[j].file {
			return out[i].file < out[j].file
		}
		return out[i].off < out[j].off
	})
	return out, nil
}

// intersect returns the parts of the sorted spans s inside [lo, hi).
func intersect(s []span, lo, hi uint64) []span {
	var out []span
	i := sort.Search(len(s), func(i int) bool { return s[i].hi > lo })
	for ; i < len(s) && s[i].lo < hi; i++ {
		out = append(out, span{max(s[i].lo, lo), min(s[i].hi, hi)})
	}
	return out
}

func spansLen(s []span) uint64 {
	var n uint64
	for _, x := range s {
		n += x.hi - x.lo
	}
	return n
}

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

// lazyVMA says whether a mapping's pages are served lazily: private anonymous memory (the
// heap too) that is not locked (mlock would wait for its pages) and not a stack (gocr writes
// into stacks while it restores).
func (r *restorer) lazyVMA(v *imagepb.VMA) bool {
	if r.lazy == nil || v.Path != "" || hasFlag(v, "lo") {
		return false
	}
	return v.Kind == imagepb.VMAKind_VMA_KIND_ANON_PRIVATE || v.Kind == imagepb.VMAKind_VMA_KIND_HEAP
}

// registerLazy gives the process a userfaultfd, takes it, registers the lazy mappings on it
// with their pages, and returns the page sources left to fill now.
func (r *restorer) registerLazy(p *procRestore, srcs []pageSource) ([]pageSource, error) {
	var vmas []span
	for _, v := range p.img.Vmas {
		if r.lazyVMA(v) {
			vmas = append(vmas, span{v.Start, v.End})
		}
	}
	if len(vmas) == 0 {
		return srcs, nil
	}
	var now []pageSource
	var later []lazyRange
	for _, s := range srcs {
		parts := []span{{s.addr, s.addr + s.len}}
		for _, v := range vmas {
			var in []span
			var rest []span
			for _, x := range parts {
				lo, hi := max(x.lo, v.lo), min(x.hi, v.hi)
				if lo >= hi {
					rest = append(rest, x)
					continue
				}
				in = append(in, span{lo, hi})
				if x.lo < lo {
					rest = append(rest, span{x.lo, lo})
				}
				if hi < x.hi {
					rest = append(rest, span{hi, x.hi})
				}
			}
			for _, x := range in {
				f, err := r.lazy.file(s.ck, s.file, s.name)
				if err != nil {
					return nil, err
				}
				later = append(later, lazyRange{addr: x.lo, len: x.hi - x.lo, src: f, off: s.off + x.lo - s.addr, level: s.level})
			}
			parts = rest
		}
		for _, x := range parts {
			now = append(now, pageSource{file: s.file, off: s.off + x.lo - s.addr, addr: x.lo, len: x.hi - x.lo, ck: s.ck, name: s.name})
		}
	}
	sort.Slice(later, func(i, j int) bool { return later[i].addr < later[j].addr })
	sort.SliceStable(now, func(i, j int) bool {
		if now[i].file != now[j].file {
			return now[i].file < now[j].file
		}
		return now[i].off < now[j].off
	})
	fd, err := r.call(p, "userfaultfd", linux.SysUserfaultfd, linux.OCloexec|linux.ONonblock)
	if err != nil {
		return nil, err
	}
	pidfd, err := linux.PidfdOpen(p.t.Pid)
	if err != nil {
		return nil, err
	}
	ours, err := linux.PidfdGetfd(pidfd, int(fd))
	linux.Close(pidfd)
	if _, cerr := r.call(p, "close userfaultfd", linux.SysClose, fd); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if err := r.lazy.add(p.t.Pid, ours, vmas, later); err != nil {
		linux.Close(ours)
		return nil, err
	}
	p.lazyUfd = ours
	return now, nil
}

// placeLazyCopy gives the process, once its fds are in place, a copy of its userfaultfd at
// fd 2000-2999 (see lazy.go): should gocr die, its memory stays registered.
func (r *restorer) placeLazyCopy(p *procRestore) error {
	if p.lazyUfd <= 0 {
		return nil
	}
	fd, err := r.installTemp(p, p.lazyUfd)
	if err != nil {
		return err
	}
	high, err := r.call(p, "move userfaultfd", linux.SysFcntl, fd, linux.FDupfdCloexec, lazyFdMin)
	if _, cerr := r.call(p, "close", linux.SysClose, fd); err == nil {
		err = cerr
	}
	if err == nil && high > lazyFdMax {
		r.call(p, "close", linux.SysClose, high)
		err = fmt.Errorf("fds %d-%d are all taken", lazyFdMin, lazyFdMax)
	}
	if err != nil {
		r.warnf("pid %d: no copy of its userfaultfd in the process (%v): should gocr die before every page is in, its missing pages would read as zeros", p.t.Pid, err)
	}
	return nil
}

// parallelFill is the size from which a stretch is filled by two copiers at once.
const parallelFill = 128 << 20

// fillParallel is fill for a large stretch of a page file (ours: gocr's fd of it, fd the
// process's): the process reads the first half with preadv while gocr writes the second
// half from the file mapped in gocr with process_vm_writev, each on its own core.
func (r *restorer) fillParallel(p *procRestore, ours int, fd uint64, segs []seg, off uint64) error {
	var total uint64
	for _, s := range segs {
		total += s.len
	}
	if total < parallelFill || ours <= 0 {
		return r.fill(p, fd, segs, off)
	}
	half := (total / 2) &^ (linux.PageSize - 1)
	var first, second []seg
	left := half
	for _, s := range segs {
		switch {
		case left >= s.len:
			first = append(first, s)
			left -= s.len
		case left > 0:
			first = append(first, seg{s.addr, left})
			second = append(second, seg{s.addr + left, s.len - left})
			left = 0
		default:
			second = append(second, s)
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- writeFromFile(p.t.Pid, ours, second, off+half) }()
	err := r.fill(p, fd, first, off)
	if werr := <-errc; err == nil {
		err = werr
	}
	if err == nil {
		r.stats.Bytes += total - half
	}
	return err
}

// writeFromFile writes segments stored one after the other from offset off of the file fd
// (gocr's) into process pid, from the file mapped in gocr.
func writeFromFile(pid, fd int, segs []seg, off uint64) error {
	var n uint64
	for _, s := range segs {
		n += s.len
	}
	m, err := unix.Mmap(fd, int64(off), int(n), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return os.NewSyscallError("mmap page file", err)
	}
	defer unix.Munmap(m)
	pos := uint64(0)
	for _, s := range segs {
		for done := uint64(0); done < s.len; {
			k := min(s.len-done, 64<<20)
			w, err := linux.ProcessVMWritev(pid, m[pos+done:pos+done+k], s.addr+done)
			if err != nil {
				return fmt.Errorf("write %#x: %w", s.addr+done, err)
			}
			if w == 0 {
				return fmt.Errorf("write %#x: nothing written", s.addr+done)
			}
			done += uint64(w)
		}
		pos += s.len
	}
	return nil
}

// fillDecoded is fill for a compressed page file: gocr decompresses the segments, stored one
// after the other from raw offset off, and writes them into the process (its mappings are
// writable while they are filled).
func (r *restorer) fillDecoded(p *procRestore, dr pageReader, segs []seg, off uint64) error {
	if r.fillBuf == nil {
		r.fillBuf = make([]byte, chunkSize)
	}
	for _, s := range segs {
		for done := uint64(0); done < s.len; {
			n := min(s.len-done, uint64(len(r.fillBuf)))
			b := r.fillBuf[:n]
			if err := dr.ReadFull(b, off); err != nil {
				return err
			}
			if w, err := linux.ProcessVMWritev(p.t.Pid, b, s.addr+done); err != nil || w != len(b) {
				return fmt.Errorf("write %#x-%#x: %d bytes written: %v", s.addr+done, s.addr+done+n, w, err)
			}
			done += n
			off += n
			r.stats.Bytes += n
			if r.opts.Progress != nil {
				r.opts.Progress(Progress{Stage: "memory", Done: r.stats.Bytes, Total: r.total})
			}
			if r.ctx.Err() != nil {
				return fmt.Errorf("restore: %w", ErrInterrupted)
			}
		}
	}
	return nil
}

// makeShmem makes a shared anonymous memory object (what MAP_SHARED|MAP_ANONYMOUS makes:
// "/dev/zero (deleted)") of s's size in gocr, fills it with s's content, and returns an fd of
// it, for processes that map only a part of it.
func (r *restorer) makeShmem(s *imagepb.SharedMemory) (int, error) {
	if s == nil || s.Size == 0 {
		return -1, fmt.Errorf("shared memory object of no size")
	}
	b, err := linux.MmapSharedAnon(int(s.Size))
	if err != nil {
		return -1, err
	}
	defer linux.Munmap(b)
	fd, err := linux.MapFileOf(b)
	if err != nil {
		return -1, err
	}
	var off int64 // the runs are one after the other in the pages file
	for _, run := range s.Runs {
		lo, n := run.Vaddr, run.NrPages*linux.PageSize
		if lo+n > s.Size {
			linux.Close(fd)
			return -1, fmt.Errorf("shared memory run past its size")
		}
		if err := linux.PreadFull(r.pages[s.PagesFile], b[lo:lo+n], off); err != nil {
			linux.Close(fd)
			return -1, fmt.Errorf("read shared memory: %w", err)
		}
		off += int64(n)
	}
	return fd, nil
}
