package core

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/procfs"
	"github.com/gocr/gocr/core/internal/tracer"
)

// ApplyOptions are the options of Apply.
type ApplyOptions struct {
	// Root is the live tree's root: the process the image was taken from, by the same pid.
	Root int
	// Dir is the image: a full or incremental one (its parents resolved), or a tracked one.
	Dir string
}

// ApplyStats are figures of a finished Apply.
type ApplyStats struct {
	Processes int
	// Pages written from the image; Dropped, pages that held data but none in the image
	// (given back to the kernel: zeros, or the file's content for a private file mapping).
	Pages, Dropped uint64
	Frozen         time.Duration
}

// Apply writes the memory of an image back into the live tree it was taken from, frozen for
// the length of the write: the processes go on, from where they are, with the memory they
// had at the dump (registers, files and the rest stay as they are now). A full or
// incremental image puts back all private memory: pages that hold data now and none in the
// image are dropped (zeros again, or the file's content for a private file mapping); a
// tracked image writes its pages only. The address space must be the image's, mapping for
// mapping: otherwise Apply refuses, naming the mapping, before anything is written.
//
// While the memory is written, a gocr that dies takes the tree with it (PTRACE_O_EXITKILL):
// a process never goes on with half of its memory rolled back.
func Apply(ctx context.Context, opts ApplyOptions) (*ApplyStats, error) {
	if opts.Root <= 0 {
		return nil, fmt.Errorf("apply: pid %d: %w", opts.Root, ErrBadArgs)
	}
	if err := needFeatures("dump"); err != nil {
		return nil, err
	}
	if _, err := os.Stat(procfs.Path(opts.Root, "")); err != nil {
		return nil, fmt.Errorf("apply: pid %d: %w", opts.Root, ErrNoProcess)
	}
	c, err := image.Open(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	switch c.Index.Kind {
	case imagepb.Kind_KIND_CHECK_ONLY:
		return nil, fmt.Errorf("apply: %s is a check-only image: it holds no memory: %w", opts.Dir, ErrBadArgs)
	case imagepb.Kind_KIND_PRE_DUMP:
		return nil, fmt.Errorf("apply: %s is a pre-dump: its memory was read while the tree ran, so it is not consistent: %w", opts.Dir, ErrBadArgs)
	}
	if err := c.VerifyData(); err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	parents, err := loadParents(c)
	if err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	chain := append([]*image.Checkpoint{c}, parents...)
	if len(c.Tree.Roots) != 1 || int(c.Tree.Roots[0]) != opts.Root {
		return nil, fmt.Errorf("apply: %s is not an image of the tree of %d (its roots: %v): %w", opts.Dir, opts.Root, c.Tree.Roots, ErrIncompatible)
	}
	for pid, p := range c.Procs {
		for _, v := range p.Vmas {
			switch v.Kind {
			case imagepb.VMAKind_VMA_KIND_ANON_SHARED, imagepb.VMAKind_VMA_KIND_SYSV_SHM, imagepb.VMAKind_VMA_KIND_PLUGIN:
				return nil, &UnsupportedError{Pid: int(pid), What: fmt.Sprintf("mapping %#x-%#x", v.Start, v.End), Kind: "shared or device memory (" + vmaKindLabel(v.Kind) + ")",
					Hint: "apply writes private memory only; restore the image instead"}
			}
		}
	}
	d := newDumper(ctx, DumpOptions{Roots: []int{opts.Root}, Final: LeaveRunning}, nil, nil)
	defer d.thread.Close()
	t0 := time.Now()
	stats := &ApplyStats{}
	err = d.apply(c, chain, stats)
	if rerr := d.thread.Do(func() error { return d.release(false) }); rerr != nil && err == nil {
		err = fmt.Errorf("apply: let the tree go: %w", rerr)
	}
	if err != nil {
		return nil, err
	}
	stats.Frozen = time.Since(t0)
	stats.Processes = len(d.order)
	return stats, nil
}

func vmaKindLabel(k imagepb.VMAKind) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k.String(), "VMA_KIND_")), "_", " ")
}

func (d *dumper) apply(c *image.Checkpoint, chain []*image.Checkpoint, stats *ApplyStats) error {
	if err := d.freeze(); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	if len(d.nsRoot) > 0 {
		return fmt.Errorf("apply: the tree of %d has namespaces of its own: apply takes trees of gocr's pid namespace: %w", d.opts.Roots[0], ErrIncompatible)
	}
	// The same processes, with the same address spaces.
	live := 0
	for _, e := range c.Tree.Processes {
		if e.Zombie {
			continue
		}
		live++
		if d.procs[int(e.Pid)] == nil {
			return fmt.Errorf("apply: pid %d of the image is not in the tree of %d: %w", e.Pid, d.opts.Roots[0], ErrIncompatible)
		}
	}
	if live != len(d.order) {
		for _, pid := range d.order {
			if c.Procs[int32(pid)] == nil {
				return fmt.Errorf("apply: pid %d of the tree is not in the image (forked since the dump?): %w", pid, ErrIncompatible)
			}
		}
	}
	maps := map[int][]procfs.Mapping{}
	for _, pid := range d.order {
		m, err := procfs.ReadSmaps(pid)
		if err != nil {
			return fmt.Errorf("apply: pid %d: read smaps: %w", pid, err)
		}
		if err := sameLayout(pid, c.Procs[int32(pid)].Vmas, m); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		maps[pid] = m
	}
	// From here the memory changes: a gocr dying now kills the tree rather than leave it
	// half rolled back.
	if err := d.thread.Do(func() error { return d.setExitKill(true) }); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	for _, pid := range d.order {
		if err := d.applyProcess(pid, c, chain, maps[pid], stats); err != nil {
			// Half written: the tree cannot go on as it is.
			d.killTree()
			return fmt.Errorf("apply: pid %d: %w (the tree was killed: its memory was half written)", pid, err)
		}
	}
	return d.thread.Do(func() error { return d.setExitKill(false) })
}

// setExitKill arms or disarms PTRACE_O_EXITKILL on every thread of the frozen tree.
func (d *dumper) setExitKill(on bool) error {
	opts := tracer.SeizeOptions
	if on {
		opts |= linux.OptExitKill
	}
	for _, pid := range d.order {
		p := d.procs[pid]
		if err := linux.SetOptions(p.t.Pid, opts); err != nil {
			return fmt.Errorf("pid %d: %w", p.t.Pid, err)
		}
		for _, th := range p.threads {
			if err := linux.SetOptions(th.t.Pid, opts); err != nil {
				return fmt.Errorf("thread %d: %w", th.t.Pid, err)
			}
		}
	}
	return nil
}

// killTree kills every frozen process (they are traced with EXITKILL: killing the tracer's
// hold is enough, but they are killed outright here).
func (d *dumper) killTree() {
	for _, pid := range d.order {
		linux.Kill(pid, linux.SIGKILL)
	}
}

// sameLayout says whether the live mappings are the image's, naming the first that differs.
func sameLayout(pid int, vmas []*imagepb.VMA, maps []procfs.Mapping) error {
	name := func(path string) string {
		if path == "" {
			return "anonymous"
		}
		return strings.TrimSuffix(path, " (deleted)")
	}
	mismatch := func(start, end uint64, path, why string) error {
		return fmt.Errorf("pid %d: the address space no longer matches the image: mapping %#x-%#x (%s) %s: %w", pid, start, end, name(path), why, ErrIncompatible)
	}
	i := 0
	for _, m := range maps {
		if i == len(vmas) || vmas[i].Start > m.Start {
			if i < len(vmas) && vmas[i].Start < m.End {
				return mismatch(vmas[i].Start, vmas[i].End, vmas[i].Path, fmt.Sprintf("is %#x-%#x now", m.Start, m.End))
			}
			return mismatch(m.Start, m.End, m.Path, "was not there at the dump")
		}
		v := vmas[i]
		if v.Start < m.Start {
			return mismatch(v.Start, v.End, v.Path, "is gone")
		}
		var prot uint32
		if m.Read {
			prot |= linux.ProtRead
		}
		if m.Write {
			prot |= linux.ProtWrite
		}
		if m.Exec {
			prot |= linux.ProtExec
		}
		switch {
		case v.End != m.End:
			return mismatch(v.Start, v.End, v.Path, fmt.Sprintf("ends at %#x now", m.End))
		case v.Prot != prot || v.Shared != m.Shared:
			return mismatch(v.Start, v.End, v.Path, "has other permissions now")
		case name(v.Path) != name(m.Path) || (v.Ino != 0 && v.Ino != m.Inode):
			return mismatch(v.Start, v.End, v.Path, "maps another file now: "+name(m.Path))
		}
		i++
	}
	if i < len(vmas) {
		return mismatch(vmas[i].Start, vmas[i].End, vmas[i].Path, "is gone")
	}
	return nil
}

// applyProcess writes one process's pages and, for a whole image, drops what it holds
// beyond them.
func (d *dumper) applyProcess(pid int, c *image.Checkpoint, chain []*image.Checkpoint, maps []procfs.Mapping, stats *ApplyStats) error {
	img := c.Procs[int32(pid)]
	srcs, err := pageSources(chain, int32(pid))
	if err != nil {
		return err
	}
	mem, err := os.OpenFile(procfs.Path(pid, "mem"), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer mem.Close()
	if c.Index.Kind != imagepb.Kind_KIND_TRACKED {
		n, err := d.dropBeyond(pid, img, srcs, maps, mem)
		if err != nil {
			return err
		}
		stats.Dropped += n
	}
	files := map[*image.Checkpoint]map[string]*image.DataReader{}
	defer func() {
		for _, m := range files {
			for _, f := range m {
				f.Close()
			}
		}
	}()
	buf := make([]byte, chunkSize)
	for _, s := range srcs {
		byName := files[s.ck]
		if byName == nil {
			byName = map[string]*image.DataReader{}
			files[s.ck] = byName
		}
		f := byName[s.name]
		if f == nil {
			if f, err = s.ck.OpenData(s.name); err != nil {
				return err
			}
			byName[s.name] = f
		}
		for done := uint64(0); done < s.len; {
			n := min(s.len-done, uint64(len(buf)))
			if err := f.ReadFull(buf[:n], s.off+done); err != nil {
				return err
			}
			if _, err := mem.WriteAt(buf[:n], int64(s.addr+done)); err != nil {
				return fmt.Errorf("write %#x-%#x: %w", s.addr+done, s.addr+done+n, err)
			}
			done += n
		}
		stats.Pages += s.len / linux.PageSize
	}
	return nil
}

// dropBeyond gives back to the kernel the pages of private mappings that hold data now but
// none in the image (they were never written at the dump): MADV_DONTNEED inside the process
// makes them zeros again, or the file's content in a private file mapping. A locked mapping
// refuses it: its anonymous pages are written with zeros instead.
func (d *dumper) dropBeyond(pid int, img *imagepb.Process, srcs []pageSource, maps []procfs.Mapping, mem *os.File) (uint64, error) {
	var inImage []span
	for _, s := range srcs {
		inImage = append(inImage, span{s.addr, s.addr + s.len})
	}
	sortSpans(inImage)
	pm, err := os.Open(procfs.Path(pid, "pagemap"))
	if err != nil {
		return 0, err
	}
	defer pm.Close()
	const ret = linux.PageIsPresent | linux.PageIsSwapped | linux.PageIsFile | linux.PageIsPFNZero
	var dropped uint64
	for i, v := range img.Vmas {
		switch v.Kind {
		case imagepb.VMAKind_VMA_KIND_ANON_PRIVATE, imagepb.VMAKind_VMA_KIND_HEAP,
			imagepb.VMAKind_VMA_KIND_STACK, imagepb.VMAKind_VMA_KIND_FILE_PRIVATE:
		default:
			continue
		}
		rs, err := linux.PagemapScan(int(pm.Fd()), v.Start, v.End, linux.PageIsPresent|linux.PageIsSwapped, ret)
		if err != nil {
			return 0, fmt.Errorf("scan pages of %#x-%#x: %w", v.Start, v.End, err)
		}
		var held []span
		for _, r := range rs {
			if r.Categories&linux.PageIsPFNZero != 0 || (r.Categories&linux.PageIsSwapped == 0 && r.Categories&linux.PageIsFile != 0) {
				continue
			}
			held = append(held, span{r.Start, r.End})
		}
		locked := maps[i].HasFlag("lo")
		for _, s := range subtract(held, intersect(inImage, v.Start, v.End)) {
			dropped += (s.hi - s.lo) / linux.PageSize
			if !locked {
				p := d.procs[pid]
				err := d.thread.Do(func() error {
					if p.t.SyscallAddr == 0 {
						if err := findSyscallInsn(p.t, maps); err != nil {
							return err
						}
					}
					_, err := p.t.Syscall(linux.SysMadvise, s.lo, s.hi-s.lo, linux.MadvDontneed)
					return err
				})
				if err != nil {
					return 0, fmt.Errorf("drop %#x-%#x: %w", s.lo, s.hi, err)
				}
				continue
			}
			if v.Kind == imagepb.VMAKind_VMA_KIND_FILE_PRIVATE {
				return 0, &UnsupportedError{Pid: pid, What: fmt.Sprintf("mapping %#x-%#x", v.Start, v.End), Kind: "locked private file mapping written since the dump", Hint: "restore the image instead"}
			}
			zero := make([]byte, s.hi-s.lo)
			if _, err := mem.WriteAt(zero, int64(s.lo)); err != nil {
				return 0, fmt.Errorf("zero %#x-%#x: %w", s.lo, s.hi, err)
			}
		}
	}
	return dropped, nil
}

// findSyscallInsn finds the `syscall` instruction of the vdso that injected calls run from.

func findSyscallInsn(t *tracer.Tracee, maps []procfs.Mapping) error {
	for _, m := range maps {
		if m.Path == "[vdso]" {
			return t.FindSyscallInsn(m.Start, m.End)
		}
	}
	return nil // no vdso: the injected call says so
}
