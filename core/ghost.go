package core

import (
	"fmt"
	"io"

	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/linux"
)

// A deleted file's content goes into the image with what makes it the same file again: its
// owner, times and holes.

// saveGhost copies the data ranges of src, a deleted file of st, to w and returns what the
// image keeps of it.
func saveGhost(src int, st linux.Stat, w io.Writer) (*imagepb.Ghost, error) {
	g := &imagepb.Ghost{Uid: st.Uid, Gid: st.Gid, AtimeNs: st.Atim.Nano(), MtimeNs: st.Mtim.Nano(), Sparse: true}
	exts, err := linux.DataExtents(src, st.Size)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 1<<20)
	for _, e := range exts {
		g.Extents = append(g.Extents, &imagepb.Extent{Offset: uint64(e.Off), Length: uint64(e.Len)})
		for off, end := e.Off, e.Off+e.Len; off < end; {
			n, err := linux.Pread(src, buf[:min(int64(len(buf)), end-off)], off)
			if err != nil {
				return nil, err
			}
			if n == 0 {
				return nil, fmt.Errorf("the file shrank while it was read")
			}
			if _, err := w.Write(buf[:n]); err != nil {
				return nil, err
			}
			off += int64(n)
		}
	}
	return g, nil
}

// writeGhost writes a deleted file's saved content into fd, a new empty file: its data
// ranges (or the whole of data), its size, owner, mode and times.
func writeGhost(fd int, data []byte, size uint64, mode uint32, g *imagepb.Ghost) error {
	if g == nil || !g.Sparse {
		if err := linux.Write(fd, data); err != nil {
			return err
		}
	} else {
		for _, e := range g.Extents { // validated: they are data's bytes, in order
			if err := linux.Pwrite(fd, data[:e.Length], int64(e.Offset)); err != nil {
				return err
			}
			data = data[e.Length:]
		}
		if err := linux.Ftruncate(fd, int64(size)); err != nil {
			return err
		}
	}
	if g == nil {
		return nil
	}
	// chown clears the set-id bits: the mode after it.
	if err := linux.Fchown(fd, int(g.Uid), int(g.Gid)); err != nil {
		return err
	}
	if err := linux.Fchmod(fd, mode&0o7777); err != nil {
		return err
	}
	return linux.Futimens(fd, g.AtimeNs, g.MtimeNs)
}
