package image

import (
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"

	"github.com/gocr/gocr/core/image/imagepb"
)

// DataReader reads a data file of an image by offsets of its raw content, whether it is
// stored as it is or compressed. A compressed file is read fastest front to back: reading
// before the last offset read starts again from its beginning.
type DataReader struct {
	name string
	f    *os.File
	raw  uint64
	dec  *zstd.Decoder // nil: stored as it is
	pos  uint64        // where dec is, in raw bytes
}

// OpenData opens the data file name of the image.
func (c *Checkpoint) OpenData(name string) (*DataReader, error) {
	e, ok := c.entries[name]
	if !ok {
		return nil, corrupt(name, "not listed in %s", IndexName)
	}
	f, err := os.Open(c.Path(name))
	if err != nil {
		return nil, corrupt(name, "cannot open: %v", err)
	}
	r := &DataReader{name: name, f: f, raw: e.Size}
	if e.Compression == imagepb.Compression_COMPRESSION_ZSTD {
		r.raw = e.RawSize
		if r.dec, err = zstd.NewReader(f, zstd.WithDecoderConcurrency(2), zstd.WithDecoderMaxWindow(64<<20)); err != nil {
			f.Close()
			return nil, corrupt(name, "cannot decompress: %v", err)
		}
	}
	return r, nil
}

// Compressed says the file is stored compressed: it cannot be read by the kernel from its fd.
func (r *DataReader) Compressed() bool { return r.dec != nil }

// Size is the size of the raw content.
func (r *DataReader) Size() uint64 { return r.raw }

// ReadFull reads len(b) raw bytes at off.
func (r *DataReader) ReadFull(b []byte, off uint64) error {
	if off+uint64(len(b)) > r.raw || off+uint64(len(b)) < off {
		return corrupt(r.name, "read of %d bytes at %d past its %d bytes", len(b), off, r.raw)
	}
	if r.dec == nil {
		if _, err := r.f.ReadAt(b, int64(off)); err != nil {
			return corrupt(r.name, "cannot read: %v", err)
		}
		return nil
	}
	if off < r.pos {
		if _, err := r.f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if err := r.dec.Reset(r.f); err != nil {
			return corrupt(r.name, "cannot decompress: %v", err)
		}
		r.pos = 0
	}
	if off > r.pos {
		if _, err := io.CopyN(io.Discard, r.dec, int64(off-r.pos)); err != nil {
			return corrupt(r.name, "cannot decompress: %v", err)
		}
		r.pos = off
	}
	if _, err := io.ReadFull(r.dec, b); err != nil {
		return corrupt(r.name, "cannot decompress at %d: %v", off, err)
	}
	r.pos += uint64(len(b))
	return nil
}

// Close closes the file.
func (r *DataReader) Close() error {
	if r.dec != nil {
		r.dec.Close()
	}
	return r.f.Close()
}

// Fd is the file's descriptor, for a file stored as it is (the kernel may read it).
func (r *DataReader) Fd() int { return int(r.f.Fd()) }

func (r *DataReader) String() string { return fmt.Sprintf("%s (%d bytes)", r.name, r.raw) }
