package image

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/gocr/gocr/core/image/imagepb"
)

// maxMessage bounds every metadata file: no honest image comes near it.
const maxMessage = 64 << 20

// Names of the files of an image.
const (
	TreeName = "tree.img"
)

// ProcName is the metadata file of process pid.
func ProcName(pid int32) string { return fmt.Sprintf("proc-%d.img", pid) }

// PagesName is the page file of process pid.
func PagesName(pid int32) string { return fmt.Sprintf("pages-%d.img", pid) }

// PipeDataName is the file of the unread bytes of pipe id.
func PipeDataName(id uint32) string { return fmt.Sprintf("pipe-%d.img", id) }

// FileDataName is the saved content of deleted file id.
func FileDataName(id uint32) string { return fmt.Sprintf("file-%d.img", id) }

// SavedFileName is the saved content of mapped file id, which has no path any more.
func SavedFileName(id uint32) string { return fmt.Sprintf("saved-%d.img", id) }

// BlobName is the file of blob name of plugin.
func BlobName(plugin, name string) string { return fmt.Sprintf("blob-%s-%s.img", plugin, name) }

// ShmemName is the page file of shared memory object id.
func ShmemName(id uint32) string { return fmt.Sprintf("shmem-%d.img", id) }

// Checkpoint is an image that was read and checked.
type Checkpoint struct {
	Dir     string
	Index   *imagepb.Index
	Tree    *imagepb.Tree
	Procs   map[int32]*imagepb.Process
	entries map[string]*imagepb.FileEntry
	// savedIDs are the ids of the saved files, for validation.
	savedIDs map[uint32]bool
}

// Open reads the image in dir and checks it: the index, the sizes of all files, the checksums
// of the metadata and every count, length and offset in it. Data files are checksummed by
// VerifyData.
func Open(dir string) (*Checkpoint, error) {
	idxPath := filepath.Join(dir, IndexName)
	b, err := readLimited(idxPath)
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(dir); serr != nil {
			return nil, fmt.Errorf("no image at %s: %w (%w)", dir, ErrNoImage, serr)
		}
		return nil, fmt.Errorf("%s has no %s: %w", dir, IndexName, ErrNoImage)
	}
	if err != nil {
		return nil, err
	}
	c := &Checkpoint{Dir: dir, Index: &imagepb.Index{}, Procs: map[int32]*imagepb.Process{}, entries: map[string]*imagepb.FileEntry{}}
	if err := proto.Unmarshal(b, c.Index); err != nil {
		return nil, corrupt(IndexName, "cannot decode: %v", err)
	}
	if err := c.checkIndex(); err != nil {
		return nil, err
	}
	c.Tree = &imagepb.Tree{}
	if err := c.ReadMessage(TreeName, c.Tree); err != nil {
		return nil, err
	}
	for _, p := range c.Tree.Processes {
		if p.Zombie {
			continue // a zombie is its entry alone
		}
		m := &imagepb.Process{}
		if err := c.ReadMessage(ProcName(p.Pid), m); err != nil {
			return nil, err
		}
		c.Procs[p.Pid] = m
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMessage+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxMessage {
		return nil, corrupt(filepath.Base(path), "larger than %d bytes", maxMessage)
	}
	return b, nil
}

func (c *Checkpoint) checkIndex() error {
	idx := c.Index
	if idx.FormatVersion != FormatVersion {
		return fmt.Errorf("image format version %d, this gocr reads version %d: %w", idx.FormatVersion, FormatVersion, ErrVersion)
	}
	switch idx.Kind {
	case imagepb.Kind_KIND_FULL, imagepb.Kind_KIND_CHECK_ONLY, imagepb.Kind_KIND_TRACKED:
		if idx.Parent != "" {
			return corrupt(IndexName, "a parent image for an image that is not incremental")
		}
	case imagepb.Kind_KIND_INCREMENTAL, imagepb.Kind_KIND_PRE_DUMP:
		if (idx.Parent == "" && idx.Kind == imagepb.Kind_KIND_INCREMENTAL) || filepath.IsAbs(idx.Parent) || strings.ContainsRune(idx.Parent, 0) || len(idx.Parent) > 4096 {
			return corrupt(IndexName, "image with a bad parent %q (a relative path is needed)", idx.Parent)
		}
	default:
		return corrupt(IndexName, "unknown image kind %d", idx.Kind)
	}
	for _, e := range idx.Files {
		if err := checkName(e.Name); err != nil || e.Name == IndexName {
			return corrupt(IndexName, "bad file name %q", e.Name)
		}
		if _, dup := c.entries[e.Name]; dup {
			return corrupt(IndexName, "file %s listed twice", e.Name)
		}
		c.entries[e.Name] = e
		st, err := os.Lstat(filepath.Join(c.Dir, e.Name))
		if err != nil {
			return corrupt(e.Name, "missing: %v", err)
		}
		if !st.Mode().IsRegular() {
			return corrupt(e.Name, "not a regular file")
		}
		if uint64(st.Size()) != e.Size {
			return corrupt(e.Name, "size %d, index says %d", st.Size(), e.Size)
		}
		switch {
		case e.Compression == imagepb.Compression_COMPRESSION_NONE && e.RawSize == 0:
		case e.Compression == imagepb.Compression_COMPRESSION_ZSTD && e.ChunkSize != 0 && strings.HasPrefix(e.Name, "pages-") && e.RawSize <= 1<<47:
			// Only page files are read through OpenData, which decompresses.
		default:
			return corrupt(IndexName, "%s: compression %d of raw size %d (only page files may be compressed, with zstd)", e.Name, e.Compression, e.RawSize)
		}
		if e.ChunkSize != 0 {
			if e.ChunkSize < 1<<20 || e.ChunkSize > 1<<30 {
				return corrupt(IndexName, "%s: chunk size %d", e.Name, e.ChunkSize)
			}
			want := max(1, (e.Size+e.ChunkSize-1)/e.ChunkSize)
			if uint64(len(e.ChunkCrc32C)) != want {
				return corrupt(IndexName, "%s: %d chunk checksums for %d bytes", e.Name, len(e.ChunkCrc32C), e.Size)
			}
		}
	}
	if _, ok := c.entries[TreeName]; !ok {
		return corrupt(IndexName, "no %s listed", TreeName)
	}
	return nil
}

// ReadMessage reads, checksums and decodes the metadata file name.
func (c *Checkpoint) ReadMessage(name string, m proto.Message) error {
	e, ok := c.entries[name]
	if !ok {
		return corrupt(name, "not listed in %s", IndexName)
	}
	if e.Size > maxMessage || e.ChunkSize != 0 {
		return corrupt(name, "larger than %d bytes, or not a metadata file", maxMessage)
	}
	b, err := readLimited(filepath.Join(c.Dir, name))
	if err != nil {
		return err
	}
	if uint64(len(b)) != e.Size {
		return corrupt(name, "size %d, index says %d", len(b), e.Size)
	}
	if sum := crc32.Checksum(b, castagnoli); sum != e.Crc32C {
		return corrupt(name, "checksum %08x, index says %08x", sum, e.Crc32C)
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return corrupt(name, "cannot decode: %v", err)
	}
	return nil
}

// Entry returns the index entry of name.
func (c *Checkpoint) Entry(name string) (*imagepb.FileEntry, bool) {
	e, ok := c.entries[name]
	return e, ok
}

// Path returns where the file name of the image is.
func (c *Checkpoint) Path(name string) string { return filepath.Join(c.Dir, name) }

// OpenParent opens the parent of an incremental image, checked as any image is; nil for
// another kind.
func (c *Checkpoint) OpenParent() (*Checkpoint, error) {
	if c.Index.Parent == "" {
		return nil, nil
	}
	p, err := Open(filepath.Join(c.Dir, c.Index.Parent))
	if err != nil {
		return nil, fmt.Errorf("parent image %s of %s: %w", c.Index.Parent, c.Dir, err)
	}
	if p.Index.Kind == imagepb.Kind_KIND_CHECK_ONLY {
		return nil, corrupt(IndexName, "parent image %s is a check-only image", c.Index.Parent)
	}
	return p, nil
}

// VerifyData checksums every file of the image against the index. Data files are checked by
// chunks, on every core.
func (c *Checkpoint) VerifyData() error { return c.VerifyDataBut(nil) }

// VerifyDataBut is VerifyData but for the files skip says a reader checks itself (a lazy
// restore checksums each chunk of a page file on its first use).
func (c *Checkpoint) VerifyDataBut(skip func(name string) bool) error {
	type job struct {
		e     *imagepb.FileEntry
		chunk int
	}
	var jobs []job
	for _, e := range c.Index.Files {
		if skip != nil && skip(e.Name) {
			continue
		}
		if e.ChunkSize == 0 {
			jobs = append(jobs, job{e, -1})
			continue
		}
		for i := range e.ChunkCrc32C {
			jobs = append(jobs, job{e, i})
		}
	}
	work := make(chan job)
	errs := make(chan error, len(jobs))
	var wg sync.WaitGroup
	for w := 0; w < runtime.NumCPU(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4<<20)
			for j := range work {
				errs <- c.verify(j.e, j.chunk, buf)
			}
		}()
	}
	for _, j := range jobs {
		work <- j
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// verify checks one chunk of a data file, or (chunk -1) a whole metadata file.
func (c *Checkpoint) verify(e *imagepb.FileEntry, chunk int, buf []byte) error {
	f, err := os.Open(c.Path(e.Name))
	if err != nil {
		return corrupt(e.Name, "cannot open: %v", err)
	}
	defer f.Close()
	off, size, want := int64(0), int64(e.Size), e.Crc32C
	if chunk >= 0 {
		off = int64(chunk) * int64(e.ChunkSize)
		size = min(int64(e.ChunkSize), int64(e.Size)-off)
		want = e.ChunkCrc32C[chunk]
	}
	h := crc32.New(castagnoli)
	n, err := io.CopyBuffer(h, io.NewSectionReader(f, off, size), buf)
	if err != nil {
		return corrupt(e.Name, "cannot read: %v", err)
	}
	if n != size {
		return corrupt(e.Name, "size %d, index says %d", off+n, e.Size)
	}
	if h.Sum32() != want {
		where := ""
		if chunk >= 0 {
			where = fmt.Sprintf(" at bytes %d-%d", off, off+size)
		}
		return corrupt(e.Name, "checksum %08x%s, index says %08x", h.Sum32(), where, want)
	}
	return nil
}

// TreeProcPath says whether path is a file of /proc/PID/ of one of the image's processes or
// threads, and gives the pid and the rest of the path ("/status"): such a file is opened
// again once that process exists, under the pid it has then.
func (c *Checkpoint) TreeProcPath(path string) (int32, string, bool) {
	rest, ok := strings.CutPrefix(path, "/proc/")
	if !ok {
		return 0, "", false
	}
	num, rest, _ := strings.Cut(rest, "/")
	pid, err := strconv.Atoi(num)
	if err != nil || pid <= 0 {
		return 0, "", false
	}
	for _, pe := range c.Tree.Processes {
		if slices.Contains(pe.Threads, int32(pid)) || pe.Pid == int32(pid) {
			if rest != "" {
				rest = "/" + rest
			}
			return int32(pid), rest, true
		}
	}
	return 0, "", false
}
