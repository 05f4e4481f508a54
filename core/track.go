package core

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"

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

// isTracker says whether fd of the process is one of gocr's trackers (not dumped).
func (p *procDump) isTracker(fd int) bool {
	for _, t := range p.trackers {
		if t.fd == fd {
			return true
		}
	}
	return false
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
