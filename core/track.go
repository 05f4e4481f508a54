package core

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/procfs"
)

// Memory change tracking without soft-dirty bits (docs/limits.md): a dump with TrackMem
// leaves in each process a userfaultfd in write-protect async mode (fd 1000-1999, close-on-
// exec), registers the process's private anonymous memory on it and write-protects it; the
// kernel then clears the protection of each page the process writes, and PAGEMAP_SCAN lists
// them. A later dump with that image as parent takes only those pages and refers to the
// parent for the rest.
//
// The tracker moves to another fd number at every dump that resets it, and the image records
// its number and inode: a dump trusts the tracker only if it is where its parent image left
// it, so a parent older than the last reset is never used for pages written since.

// tracker is a write-tracking userfaultfd found in a process.
type tracker struct {
	fd  int
	ino uint64
}

// findTrackers lists the userfaultfds in write-protect async mode at fds 1000-1999: those
// gocr leaves, or copies of them a child inherited across fork.
func findTrackers(pid int) ([]tracker, error) {
	fds, err := procfs.Fds(pid)
	if err != nil {
		return nil, err
	}
	var out []tracker
	for _, fd := range fds {
		if fd < linux.UffdTrackerFdMin || fd > linux.UffdTrackerFdMax {
			continue
		}
		if link, _ := procfs.Link(pid, "fd/"+strconv.Itoa(fd)); link != "anon_inode:[userfaultfd]" {
			continue
		}
		info, err := procfs.ReadFdInfo(pid, fd)
		if err != nil || info.UffdFeatures&linux.UffdFeatureWPAsync == 0 {
			continue
		}
		st, err := linux.StatPath(procfs.Path(pid, "fd/"+strconv.Itoa(fd)))
		if err != nil {
			continue
		}
		out = append(out, tracker{fd: fd, ino: st.Ino})
	}
	return out, nil
}

// isTracker says whether fd of the process is one of gocr's trackers, or the idle copy of
// its userfaultfd a lazy restore left (fd 2000-2999, missing mode, no mapping registered
// any more): neither is dumped.
func (p *procDump) isTracker(fd int) bool {
	for _, t := range p.trackers {
		if t.fd == fd {
			return true
		}
	}
	if fd < lazyFdMin || fd > lazyFdMax {
		return false
	}
	if link, _ := procfs.Link(p.t.Pid, "fd/"+strconv.Itoa(fd)); link != "anon_inode:[userfaultfd]" {
		return false
	}
	if info, err := procfs.ReadFdInfo(p.t.Pid, fd); err != nil || info.UffdFeatures&linux.UffdFeatureWPAsync != 0 {
		return false
	}
	for i := range p.maps {
		if p.maps[i].HasFlag("um") {
			return false // still registered: a lazy restore is serving it, or it is the process's own
		}
	}
	return true
}

// trackable says whether a mapping's pages are tracked: private anonymous memory that can be
// accessed at all.
func trackable(v *imagepb.VMA) bool {
	switch v.Kind {
	case imagepb.VMAKind_VMA_KIND_ANON_PRIVATE, imagepb.VMAKind_VMA_KIND_HEAP, imagepb.VMAKind_VMA_KIND_STACK:
		return v.Prot != 0 && v.Path == ""
	}
	return false
}

// findOwnTracker finds the process's trackers and, when the parent image left one here,
// says it is still alive: the incremental dump may then trust the written bits.
func (d *dumper) findOwnTracker(p *procDump) error {
	ts, err := findTrackers(p.t.Pid)
	if err != nil {
		return fmt.Errorf("look for a memory tracker: %w", err)
	}
	p.trackers = ts
	if d.parent == nil {
		return nil
	}
	pp := d.parent.Procs[d.vpid(p.t.Pid)]
	if pp == nil || pp.Tracker == nil {
		return nil
	}
	for i, t := range ts {
		if t.fd == int(pp.Tracker.Fd) && t.ino == pp.Tracker.Ino {
			p.ownTracker = &ts[i]
		}
	}
	return nil
}

// moveTracker runs inside the held process (injection): it makes the process's own tracker
// (a new one if it has none) sit at a fd number that no image names yet, and closes the
// copies it does not own. It leaves p.newTracker set, or a warning where the kernel or the
// process refuses a userfaultfd.
func (d *dumper) moveTracker(p *procDump) error {
	t := p.t
	for _, tr := range p.trackers {
		if p.ownTracker != nil && tr.fd == p.ownTracker.fd {
			continue
		}
		if _, err := t.Syscall(linux.SysClose, uint64(tr.fd)); err != nil {
			return fmt.Errorf("close an inherited memory tracker (fd %d): %w", tr.fd, err)
		}
	}
	if own := p.ownTracker; own != nil {
		next := own.fd + 1
		if next > linux.UffdTrackerFdMax {
			next = linux.UffdTrackerFdMin
		}
		fd, err := t.Syscall(linux.SysFcntl, uint64(own.fd), linux.FDupfdCloexec, uint64(next))
		if err == nil && fd > linux.UffdTrackerFdMax {
			t.Syscall(linux.SysClose, fd)
			fd, err = t.Syscall(linux.SysFcntl, uint64(own.fd), linux.FDupfdCloexec, linux.UffdTrackerFdMin)
		}
		if err != nil {
			return fmt.Errorf("move the memory tracker: %w", err)
		}
		if _, err := t.Syscall(linux.SysClose, uint64(own.fd)); err != nil {
			return fmt.Errorf("move the memory tracker: %w", err)
		}
		p.newTracker = &tracker{fd: int(fd), ino: own.ino}
		p.trackers = append(p.trackers, *p.newTracker)
		return nil
	}
	ufd, err := t.Syscall(linux.SysUserfaultfd, linux.OCloexec|linux.ONonblock|linux.UffdUserModeOnly)
	if err != nil {
		d.warn("pid %d: memory is not tracked: userfaultfd: %v", t.Pid, err)
		return nil
	}
	fd, err := t.Syscall(linux.SysFcntl, ufd, linux.FDupfdCloexec, linux.UffdTrackerFdMin)
	t.Syscall(linux.SysClose, ufd)
	if err != nil {
		return fmt.Errorf("place the memory tracker: %w", err)
	}
	if fd > linux.UffdTrackerFdMax {
		t.Syscall(linux.SysClose, fd)
		d.warn("pid %d: memory is not tracked: fds %d-%d are all taken", t.Pid, linux.UffdTrackerFdMin, linux.UffdTrackerFdMax)
		return nil
	}
	p.newTracker = &tracker{fd: int(fd)}
	p.trackers = append(p.trackers, *p.newTracker)
	return nil
}

// armTracking registers the process's trackable memory on its tracker and write-protects it,
// once this dump has scanned what was written: the next dump, with this image as parent,
// sees only what is written from now on. The process is still frozen.
func (d *dumper) armTracking(p *procDump) error {
	nt := p.newTracker
	if nt == nil {
		return nil
	}
	pidfd, err := linux.PidfdOpen(p.t.Pid)
	if err != nil {
		return err
	}
	defer linux.Close(pidfd)
	ufd, err := linux.PidfdGetfd(pidfd, nt.fd)
	if err != nil {
		return fmt.Errorf("take the memory tracker: %w", err)
	}
	defer linux.Close(ufd)
	fresh := nt.ino == 0
	if fresh {
		if err := linux.UffdAPI(ufd, linux.UffdFeatureWPAsync); err != nil {
			d.warn("pid %d: memory is not tracked: %v", p.t.Pid, err)
			return nil
		}
		st, err := linux.Fstat(ufd)
		if err != nil {
			return err
		}
		nt.ino = st.Ino
	}
	pm, err := os.Open(procfs.Path(p.t.Pid, "pagemap"))
	if err != nil {
		return err
	}
	defer pm.Close()
	for i, v := range p.img.Vmas {
		if !trackable(v) {
			continue
		}
		// A mapping is registered unless the tracker kept from the parent has it already
		// (smaps was read before the tracker moved: its "uw" is about that one).
		if fresh || !p.maps[i].HasFlag("uw") {
			if err := linux.UffdRegisterWP(ufd, v.Start, v.End-v.Start); err != nil {
				continue // another userfaultfd has it (EBUSY): dumped whole each time
			}
		}
		dense := 2*p.maps[i].Rss >= v.End-v.Start
		if err := linux.PagemapResetWritten(int(pm.Fd()), v.Start, v.End, dense); err != nil {
			return fmt.Errorf("write-protect %#x-%#x: %w", v.Start, v.End, err)
		}
		// Only what the kernel confirms is tracked is marked so.
		if ok, err := linux.PagemapTracked(int(pm.Fd()), v.Start, v.End); err != nil {
			return fmt.Errorf("check tracking of %#x-%#x: %w", v.Start, v.End, err)
		} else if ok {
			v.Tracked = true
		}
	}
	p.img.Tracker = &imagepb.UffdTracker{Fd: int32(nt.fd), Ino: nt.ino}
	return nil
}

// span is [lo, hi) in bytes.
type span struct{ lo, hi uint64 }

// sinceParent returns, for a mapping tracked without a break since the parent image, the
// parts of it where the parent chain holds data; ok is false when the mapping must be dumped
// whole (no parent, the tracker gone or moved, or the mapping not tracked then).
func (d *dumper) sinceParent(p *procDump, i int) (parent []span, ok bool) {
	v := p.img.Vmas[i]
	if p.ownTracker == nil || !trackable(v) || !p.maps[i].HasFlag("uw") {
		return nil, false
	}
	pp := d.parent.Procs[d.vpid(p.t.Pid)]
	covered := false
	for _, pv := range pp.Vmas {
		if pv.Tracked && pv.Start <= v.Start && v.End <= pv.End {
			covered = true
		}
	}
	if !covered {
		return nil, false
	}
	for _, r := range pp.Pages {
		lo, hi := max(r.Vaddr, v.Start), min(r.Vaddr+r.NrPages*linux.PageSize, v.End)
		if lo < hi {
			parent = append(parent, span{lo, hi})
		}
	}
	return parent, true
}

// subtract returns a minus b; both sorted and without overlaps.
func subtract(a, b []span) []span {
	var out []span
	j := 0
	for _, s := range a {
		lo := s.lo
		for j < len(b) && b[j].hi <= lo {
			j++
		}
		for k := j; k < len(b) && b[k].lo < s.hi; k++ {
			if b[k].lo > lo {
				out = append(out, span{lo, b[k].lo})
			}
			lo = max(lo, b[k].hi)
		}
		if lo < s.hi {
			out = append(out, span{lo, s.hi})
		}
	}
	return out
}

// openParent opens the parent image of an incremental dump: dir is as given (relative to
// the new image's directory, as CRIU's --prev-images-dir), and the path the new index
// records is returned with it.
func openParent(imagesDir, dir string) (*image.Checkpoint, string, error) {
	abs := dir
	if !filepath.IsAbs(dir) {
		abs = filepath.Join(imagesDir, dir)
	}
	c, err := image.Open(abs)
	if err != nil {
		return nil, "", fmt.Errorf("parent image: %w", err)
	}
	if c.Index.Kind == imagepb.Kind_KIND_CHECK_ONLY {
		return nil, "", fmt.Errorf("parent image %s is a check-only image: it holds no memory: %w", dir, ErrBadArgs)
	}
	here, err := filepath.Abs(imagesDir)
	if err != nil {
		return nil, "", err
	}
	there, err := filepath.Abs(abs)
	if err != nil {
		return nil, "", err
	}
	rel, err := filepath.Rel(here, there)
	if err != nil {
		return nil, "", err
	}
	return c, rel, nil
}

// sortSpans sorts spans by start.
func sortSpans(s []span) {
	sort.Slice(s, func(i, j int) bool { return s[i].lo < s[j].lo })
}

var errNoParentPage = errors.New("a page marked in the parent image is in no image of the chain")

// maxParents bounds the chain of images an incremental image may need.
const maxParents = 16

// loadParents opens and checks every image up the chain of an incremental image, nearest
// first: each one whole (checksums included), no loop, at most maxParents.
func loadParents(c *image.Checkpoint) ([]*image.Checkpoint, error) {
	var out []*image.Checkpoint
	seen := map[string]bool{}
	if real, err := filepath.EvalSymlinks(c.Dir); err == nil {
		seen[real] = true
	}
	for ck := c; ck.Index.Parent != ""; {
		if len(out) == maxParents {
			return nil, fmt.Errorf("image %s: more than %d parent images: %w", c.Dir, maxParents, image.ErrCorrupt)
		}
		p, err := ck.OpenParent()
		if err != nil {
			return nil, err
		}
		real, err := filepath.EvalSymlinks(p.Dir)
		if err != nil {
			return nil, err
		}
		if seen[real] {
			return nil, fmt.Errorf("image %s: the chain of parent images loops at %s: %w", c.Dir, p.Dir, image.ErrCorrupt)
		}
		seen[real] = true
		if err := p.VerifyData(); err != nil {
			return nil, fmt.Errorf("parent image %s: %w", p.Dir, err)
		}
		out = append(out, p)
		ck = p
	}
	return out, nil
}

// TrackOptions are the options of Track.
type TrackOptions struct {
	// Roots are the PIDs whose trees are tracked (each process and all its descendants).
	Roots []int
	// Reset resets the tracking now, after reporting what was written: from here on only the
	// pages the processes write are reported, and dumped by a dump with Tracked. A process
	// without a tracker gets one. The tree is frozen for the length of the reset.
	Reset bool
}

// TrackReport says what the processes wrote since their tracking was last reset (before
// Track's own reset, when it made one).
type TrackReport struct {
	Processes []TrackedProcess
}

// TrackedProcess is what one process wrote.
type TrackedProcess struct {
	Pid int
	// Tracked says the process holds a tracker: without one, nothing it writes is seen, and
	// every mapping counts as written whole.
	Tracked bool
	// Mappings are its private anonymous mappings (heap and stacks too).
	Mappings []TrackedMapping
	// Pages written in all of them, Bytes the same in bytes.
	Pages, Bytes uint64
}

// TrackedMapping is one mapping of a tracked process.
type TrackedMapping struct {
	Start, End uint64
	Name       string // [heap], [stack] or "" (anonymous)
	// Tracked says the mapping is tracked since the reset; if not (mapped since, or the
	// process holds no tracker), all its pages that hold data count as written.
	Tracked bool
	// Written are the ranges [lo, hi) of written pages that hold data now.
	Written [][2]uint64
	Pages   uint64
}

// Track reports what the trees wrote since their memory tracking was last reset and, with
// Reset, resets it (the "reset, run the function, see or dump what changed" of memory
// tracking). A dump with Tracked then writes only what was written since.
func Track(ctx context.Context, opts TrackOptions) (*TrackReport, error) {
	if len(opts.Roots) == 0 {
		return nil, fmt.Errorf("track: no process given: %w", ErrBadArgs)
	}
	if err := needFeatures("track"); err != nil {
		return nil, err
	}
	var pids []int
	for _, root := range opts.Roots {
		if root <= 0 {
			return nil, fmt.Errorf("track: pid %d: %w", root, ErrBadArgs)
		}
		if _, err := os.Stat(procfs.Path(root, "")); err != nil {
			return nil, fmt.Errorf("track: pid %d: %w", root, ErrNoProcess)
		}
		queue := []int{root}
		for len(queue) > 0 {
			pid := queue[0]
			queue = queue[1:]
			pids = append(pids, pid)
			kids, err := procfs.Children(pid)
			if err != nil {
				return nil, fmt.Errorf("track: pid %d: list children: %w", pid, err)
			}
			queue = append(queue, kids...)
		}
	}
	rep := &TrackReport{}
	for _, pid := range pids {
		tp, err := trackedProcess(pid)
		if err != nil {
			return nil, fmt.Errorf("track: pid %d: %w", pid, err)
		}
		if tp != nil {
			rep.Processes = append(rep.Processes, *tp)
		}
	}
	if opts.Reset {
		if err := resetTracking(ctx, opts.Roots); err != nil {
			return nil, fmt.Errorf("track: %w", err)
		}
	}
	return rep, nil
}

// trackedProcess reads what pid wrote since its tracking was reset (nil for a zombie).
func trackedProcess(pid int) (*TrackedProcess, error) {
	if st, err := procfs.ReadStat(pid); err != nil {
		return nil, err
	} else if st.State == 'Z' {
		return nil, nil
	}
	trackers, err := findTrackers(pid)
	if err != nil {
		return nil, fmt.Errorf("look for a memory tracker: %w", err)
	}
	maps, err := procfs.ReadSmaps(pid)
	if err != nil {
		return nil, fmt.Errorf("read smaps: %w", err)
	}
	pm, err := os.Open(procfs.Path(pid, "pagemap"))
	if err != nil {
		return nil, fmt.Errorf("open pagemap: %w", err)
	}
	defer pm.Close()
	tp := &TrackedProcess{Pid: pid, Tracked: len(trackers) > 0}
	for i := range maps {
		m := &maps[i]
		if m.Shared || !(m.Read || m.Write || m.Exec) || (m.Path != "" && m.Path != "[heap]" && m.Path != "[stack]") {
			continue
		}
		tm := TrackedMapping{Start: m.Start, End: m.End, Name: m.Path, Tracked: tp.Tracked && m.HasFlag("uw")}
		var held []span
		if tm.Tracked {
			_, held, err = writtenHeld(int(pm.Fd()), m.Start, m.End)
		} else {
			held, err = dataPages(int(pm.Fd()), m.Start, m.End)
		}
		if err != nil {
			return nil, err
		}
		for _, s := range held {
			tm.Written = append(tm.Written, [2]uint64{s.lo, s.hi})
			tm.Pages += (s.hi - s.lo) / linux.PageSize
		}
		tp.Pages += tm.Pages
		tp.Mappings = append(tp.Mappings, tm)
	}
	tp.Bytes = tp.Pages * linux.PageSize
	return tp, nil
}

// dataPages lists the pages of the anonymous mapping lo-hi that hold data: present or
// swapped, not the zero page.
func dataPages(pm int, lo, hi uint64) ([]span, error) {
	const ret = linux.PageIsPresent | linux.PageIsSwapped | linux.PageIsPFNZero
	rs, err := linux.PagemapScan(pm, lo, hi, linux.PageIsPresent|linux.PageIsSwapped, ret)
	if err != nil {
		return nil, fmt.Errorf("scan pages of %#x-%#x: %w", lo, hi, err)
	}
	var out []span
	for _, r := range rs {
		if r.Categories&linux.PageIsPFNZero == 0 {
			out = append(out, span{r.Start, r.End})
		}
	}
	return out, nil
}

// resetTracking freezes the trees, gives each process a tracker where it has none (moving
// the one it has, as a dump with TrackMem does, so that no image taken before trusts it),
// write-protects the trackable memory again and lets the trees go. Nothing is written: the
// files a dump would save (deleted mapped files) go to a scratch image, thrown away.
func resetTracking(ctx context.Context, roots []int) error {
	scratch, err := os.MkdirTemp("", "gocr-track-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	w, err := image.Create(filepath.Join(scratch, "img"), false)
	if err != nil {
		return err
	}
	defer w.Abort()
	d := newDumper(ctx, DumpOptions{Roots: roots, Final: LeaveRunning, TrackMem: true, NoSync: true}, w, nil)
	defer d.thread.Close()
	err = d.resetTracking()
	if err != nil {
		if rerr := d.thread.Do(func() error { return d.release(false) }); rerr != nil {
			err = fmt.Errorf("%w (and letting the tree go failed: %v)", err, rerr)
		}
		return err
	}
	return nil
}

func (d *dumper) resetTracking() error {
	if err := d.freeze(); err != nil {
		return err
	}
	for _, pid := range d.order {
		p := d.procs[pid]
		if err := d.thread.Do(func() error { return d.collect(p) }); err != nil {
			return pidError(pid, err)
		}
		if err := d.armTracking(p); err != nil {
			return pidError(pid, err)
		}
		if p.newTracker == nil {
			return pidError(pid, fmt.Errorf("its memory cannot be tracked: %s", strings.Join(d.stats.Warnings, "; ")))
		}
	}
	return d.thread.Do(d.finish)
}
