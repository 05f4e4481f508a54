// Package image writes and reads gocr image directories: protobuf metadata, raw page-aligned
// data files and the index that names them all with sizes and checksums. A reader never trusts
// an image: Open checks the index, Load checks every length, count and offset against what the
// files hold. It knows nothing of processes beyond the messages in imagepb.
package image

import (
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"

	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/linux"
)

// FormatVersion is the version of the image format this code writes and reads.
const FormatVersion = 1

// IndexName is the file every image has; it is written last.
const IndexName = "index.img"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Writer builds an image in a temporary directory next to the final one; Commit makes it
// appear whole under its name, Abort removes it.
type Writer struct {
	// Sync says the image will be synced at Commit: data files then start their writeback
	// as they are written, so that the final fsync finds little left.
	Sync    bool
	dir     string // final name
	tmp     string
	entries map[string]*imagepb.FileEntry
	files   []*os.File          // kept open until Commit syncs them
	raw     map[string]*os.File // written by others (plugins), checksummed at Commit
	// into: the files are moved into dir at Commit, which stays the same directory (see
	// CreateIn), instead of the whole directory taking dir's place.
	into bool
}

// CreateIn starts an image to be written into the existing directory dir, as CRIU writes
// its images: the directory stays the one a caller may hold open, and files in it that are
// not the image's (a log) stay; an image already there is replaced. The files are written
// beside it and moved in at Commit, the index last, so that dir never holds an index of a
// half-written image.
func CreateIn(dir string) (*Writer, error) {
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("images directory %s: not a directory (%v)", dir, err)
	}
	w, err := Create(filepath.Join(dir, ".gocr-new"), false)
	if err != nil {
		return nil, err
	}
	w.dir, w.into = filepath.Clean(dir), true
	return w, nil
}

// Create starts an image to appear at dir. dir may not exist yet or be empty; an existing
// image is replaced only with overwrite.
func Create(dir string, overwrite bool) (*Writer, error) {
	dir = filepath.Clean(dir)
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("open images directory: %w", err)
	case len(ents) > 0:
		if _, err := os.Stat(filepath.Join(dir, IndexName)); err == nil {
			if !overwrite {
				return nil, fmt.Errorf("%s already holds an image (use --overwrite to replace it): %w", dir, ErrExists)
			}
		} else {
			return nil, fmt.Errorf("%s is not empty and holds no image: %w", dir, ErrExists)
		}
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, fmt.Errorf("create images directory: %w", err)
	}
	removeStale(parent, filepath.Base(dir))
	tmp, err := os.MkdirTemp(parent, fmt.Sprintf(".%s.partial-%d-", filepath.Base(dir), os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("create images directory: %w", err)
	}
	if err := os.Chmod(tmp, 0o700); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	return &Writer{dir: dir, tmp: tmp, entries: map[string]*imagepb.FileEntry{}}, nil
}

// removeStale removes what a gocr killed while writing an image of the same name left: its
// partial directory (named after its pid) once that gocr is gone.
func removeStale(parent, base string) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	prefix := "." + base + ".partial-"
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || !e.IsDir() {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := linux.Kill(pid, 0); errors.Is(err, linux.ESRCH) {
			os.RemoveAll(filepath.Join(parent, e.Name()))
		}
	}
}

// Dir is where the image is being written until Commit.
func (w *Writer) Dir() string { return w.tmp }

func (w *Writer) add(name string, f *os.File, size uint64, sum uint32) {
	w.entries[name] = &imagepb.FileEntry{Name: name, Size: size, Crc32C: sum}
	w.files = append(w.files, f)
}

func (w *Writer) create(name string) (*os.File, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if _, dup := w.entries[name]; dup {
		return nil, fmt.Errorf("image file %s written twice", name)
	}
	return os.OpenFile(filepath.Join(w.tmp, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
}

// WriteMessage writes one protobuf message as the file name.
func (w *Writer) WriteMessage(name string, m proto.Message) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	f, err := w.create(name)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	w.add(name, f, uint64(len(b)), crc32.Checksum(b, castagnoli))
	return nil
}

// DataFile is a raw file being written, checksummed as it goes.
type DataFile struct {
	w       *Writer
	name    string
	f       *os.File
	crc     hash.Hash32 // of the chunk being written
	chunks  []uint32
	n       uint64 // stored
	flushed uint64 // writeback started up to here
	// enc compresses what is written (CreateCompressed); raw counts it.
	enc *zstd.Encoder
	raw uint64
}

// ChunkSize is the size of the checksummed chunks of data files.
const ChunkSize = 64 << 20

// writebackStep is how much is written before its writeback is started.
const writebackStep = 64 << 20

// CreateData starts the raw file name. A size, when known, is reserved up front: writing
// into reserved blocks is several times faster on ext4 than allocating as it goes.
func (w *Writer) CreateData(name string, size int64) (*DataFile, error) {
	f, err := w.create(name)
	if err != nil {
		return nil, err
	}
	if size > 0 {
		_ = linux.Fallocate(int(f.Fd()), size) // only a hint: not every file system has it
	}
	return &DataFile{w: w, name: name, f: f, crc: crc32.New(castagnoli)}, nil
}

// CreateCompressed starts the data file name, stored as a zstd stream of what is written
// (page files: the restore and apply read them through OpenData). Fast level, on every core.
func (w *Writer) CreateCompressed(name string) (*DataFile, error) {
	d, err := w.CreateData(name, 0)
	if err != nil {
		return nil, err
	}
	d.enc, err = zstd.NewWriter(storeWriter{d}, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(runtime.NumCPU()))
	if err != nil {
		d.f.Close()
		return nil, err
	}
	return d, nil
}

// storeWriter is what a DataFile's encoder writes to: the file.
type storeWriter struct{ d *DataFile }

func (s storeWriter) Write(b []byte) (int, error) { return s.d.store(b) }

// Write appends b.
func (d *DataFile) Write(b []byte) (int, error) {
	if d.enc == nil {
		return d.store(b)
	}
	n, err := d.enc.Write(b)
	d.raw += uint64(n)
	if err != nil {
		return n, fmt.Errorf("write %s: %w", d.name, err)
	}
	return n, nil
}

// store appends b to the file as it is stored.
func (d *DataFile) store(b []byte) (int, error) {
	n, err := d.f.Write(b)
	for done := b[:n]; len(done) > 0; {
		room := ChunkSize - d.n%ChunkSize
		part := done[:min(uint64(len(done)), room)]
		d.crc.Write(part)
		d.n += uint64(len(part))
		done = done[len(part):]
		if d.n%ChunkSize == 0 {
			d.chunks = append(d.chunks, d.crc.Sum32())
			d.crc.Reset()
		}
	}
	if err != nil {
		return n, fmt.Errorf("write %s: %w", d.name, err)
	}
	if d.w.Sync && d.n-d.flushed >= writebackStep {
		_ = linux.StartWriteback(int(d.f.Fd()), int64(d.flushed), int64(d.n-d.flushed)) // a hint
		d.flushed = d.n
	}
	return n, nil
}

// Size is how much was written so far (before compression).
func (d *DataFile) Size() uint64 {
	if d.enc != nil {
		return d.raw
	}
	return d.n
}

// Stored is how much was stored so far (after compression).
func (d *DataFile) Stored() uint64 { return d.n }

// Close ends the file (flushing a compressed one) and records it in the index; the file is
// kept open until Commit syncs it.
func (d *DataFile) Close() error {
	e := &imagepb.FileEntry{Name: d.name, ChunkSize: ChunkSize}
	var err error
	if d.enc != nil {
		err = d.enc.Close()
		e.Compression, e.RawSize = imagepb.Compression_COMPRESSION_ZSTD, d.raw
	}
	if d.n%ChunkSize != 0 || d.n == 0 {
		d.chunks = append(d.chunks, d.crc.Sum32())
	}
	e.Size, e.ChunkCrc32C = d.n, d.chunks
	d.w.entries[d.name] = e
	d.w.files = append(d.w.files, d.f)
	return err
}

// CreateRaw starts the raw file name for someone else to write (a plugin, through the fd it
// is sent): Commit reads it back for its size and checksums. The caller closes its copy.
func (w *Writer) CreateRaw(name string) (*os.File, error) {
	if _, dup := w.raw[name]; dup {
		return nil, fmt.Errorf("image file %s written twice", name)
	}
	f, err := w.create(name)
	if err != nil {
		return nil, err
	}
	if w.raw == nil {
		w.raw = map[string]*os.File{}
	}
	mine, err := os.Open(f.Name())
	if err != nil {
		f.Close()
		return nil, err
	}
	w.raw[name] = mine
	return f, nil
}

// sumRaw records the raw files others wrote in the index, checksummed as CreateData's are.
func (w *Writer) sumRaw() error {
	buf := make([]byte, 1<<20)
	for name, f := range w.raw {
		e := &imagepb.FileEntry{Name: name, ChunkSize: ChunkSize}
		crc := crc32.New(castagnoli)
		for {
			n, err := f.Read(buf[:min(uint64(len(buf)), ChunkSize-e.Size%ChunkSize)])
			crc.Write(buf[:n])
			e.Size += uint64(n)
			if n > 0 && e.Size%ChunkSize == 0 {
				e.ChunkCrc32C = append(e.ChunkCrc32C, crc.Sum32())
				crc.Reset()
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("read %s back: %w", name, err)
			}
		}
		if e.Size%ChunkSize != 0 || e.Size == 0 {
			e.ChunkCrc32C = append(e.ChunkCrc32C, crc.Sum32())
		}
		w.entries[name] = e
		w.files = append(w.files, f)
		delete(w.raw, name)
	}
	return nil
}

// Commit writes the index, syncs every file and the directory, and renames the image into
// place. After Commit returns nil the image is complete on disk.
func (w *Writer) Commit(idx *imagepb.Index, sync bool) error {
	if err := w.sumRaw(); err != nil {
		return err
	}
	idx.FormatVersion = FormatVersion
	idx.CreatedUnixNano = time.Now().UnixNano()
	idx.Files = idx.Files[:0]
	for _, e := range w.entries {
		idx.Files = append(idx.Files, e)
	}
	sort.Slice(idx.Files, func(i, j int) bool { return idx.Files[i].Name < idx.Files[j].Name })
	b, err := proto.Marshal(idx)
	if err != nil {
		return fmt.Errorf("encode index: %w", err)
	}
	return w.commitIndex(b, sync, nil)
}

// CreateReceived starts the file name of an image received whole from elsewhere (a page
// server's client): its bytes are written as they come, and CommitReceived checks them all
// against the index that comes last.
func (w *Writer) CreateReceived(name string) (*os.File, error) {
	f, err := w.create(name)
	if err != nil {
		return nil, err
	}
	w.entries[name] = &imagepb.FileEntry{Name: name}
	w.files = append(w.files, f)
	return f, nil
}

// CommitReceived puts a received image in place once its index (as encoded) says what the
// files written are, every one of them, with their sizes and checksums: anything else, and
// nothing is put in place (Abort removes it).
func (w *Writer) CommitReceived(index []byte, sync bool) error {
	return w.CommitReceivedBut(index, sync, nil)
}

// CommitReceivedBut is CommitReceived not checking the data of the files skip names (a lazy
// restore's page files, read from a page server later and checked then).
func (w *Writer) CommitReceivedBut(index []byte, sync bool, skip func(string) bool) error {
	return w.commitIndex(index, sync, func() error {
		c, err := Open(w.tmp)
		if err != nil {
			return err
		}
		if len(c.Index.Files) != len(w.entries) {
			return corrupt(IndexName, "lists %d files, %d were sent", len(c.Index.Files), len(w.entries))
		}
		for _, e := range c.Index.Files {
			if w.entries[e.Name] == nil {
				return corrupt(IndexName, "lists %s, which was not sent", e.Name)
			}
		}
		return c.VerifyDataBut(skip)
	})
}

// commitIndex writes the index, syncs and closes every file, runs check (if any) on the
// whole image in its temporary place, and puts it in place.
func (w *Writer) commitIndex(b []byte, sync bool, check func() error) error {
	f, err := os.OpenFile(filepath.Join(w.tmp, IndexName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write index: %w", err)
	}
	w.files = append(w.files, f)
	for _, f := range w.files {
		if sync {
			if err := f.Sync(); err != nil {
				return fmt.Errorf("sync %s: %w", f.Name(), err)
			}
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("close %s: %w", f.Name(), err)
		}
	}
	w.files = nil
	if check != nil {
		if err := check(); err != nil {
			return err
		}
	}
	if sync {
		if err := syncDir(w.tmp); err != nil {
			return err
		}
	}
	if w.into {
		return w.moveIn(sync)
	}
	// Replace an old image (allowed by Create) by moving it aside first.
	var old string
	if _, err := os.Stat(filepath.Join(w.dir, IndexName)); err == nil {
		old = w.tmp + ".old"
		if err := os.Rename(w.dir, old); err != nil {
			return fmt.Errorf("move old image aside: %w", err)
		}
	} else {
		os.Remove(w.dir) // an empty directory the user made; rename needs it gone
	}
	if err := os.Rename(w.tmp, w.dir); err != nil {
		return fmt.Errorf("put image in place: %w", err)
	}
	if old != "" {
		os.RemoveAll(old)
	}
	if sync {
		return syncDir(filepath.Dir(w.dir))
	}
	return nil
}

// moveIn moves the committed files into w.dir: the old index first out of the way, the new
// one last.
func (w *Writer) moveIn(sync bool) error {
	if err := os.Remove(filepath.Join(w.dir, IndexName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the old image's index: %w", err)
	}
	ents, err := os.ReadDir(w.tmp)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.Name() != IndexName {
			if err := os.Rename(filepath.Join(w.tmp, e.Name()), filepath.Join(w.dir, e.Name())); err != nil {
				return fmt.Errorf("put image in place: %w", err)
			}
		}
	}
	if err := os.Rename(filepath.Join(w.tmp, IndexName), filepath.Join(w.dir, IndexName)); err != nil {
		return fmt.Errorf("put image in place: %w", err)
	}
	os.Remove(w.tmp)
	if sync {
		return syncDir(w.dir)
	}
	return nil
}

// Abort removes everything written.
func (w *Writer) Abort() {
	for _, f := range w.files {
		f.Close()
	}
	for _, f := range w.raw {
		f.Close()
	}
	w.raw = nil
	w.files = nil
	os.RemoveAll(w.tmp)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
