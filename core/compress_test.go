package core_test

import (
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/internal/testutil"
	"google.golang.org/protobuf/proto"
)

// storedPages sums what the page files of an image take on disk, and what they hold.
func storedPages(t *testing.T, dir string) (stored, raw uint64, compressed bool) {
	t.Helper()
	c, err := image.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range c.Index.Files {
		if strings.HasPrefix(e.Name, "pages-") {
			stored += e.Size
			raw += e.Size
			if e.Compression == imagepb.Compression_COMPRESSION_ZSTD {
				raw += e.RawSize - e.Size
				compressed = true
			}
		}
	}
	return stored, raw, compressed
}

// A compressed chain (a pre-dump, then a final dump against it, both compressed) is smaller
// than the memory it holds, and the restore brings every page back as the process checks it.
func TestCompressedImages(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "incr")
	report := filepath.Join(dir, "report")
	base := t.TempDir()
	d1, d2 := filepath.Join(base, "1"), filepath.Join(base, "2")
	st, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{p.Pid}, Dir: d1, PreDump: true, Compress: true})
	if err != nil {
		t.Fatalf("compressed pre-dump: %v", err)
	}
	stored, raw, compressed := storedPages(t, d1)
	if !compressed || stored*4 > raw || st.Stored != stored || st.Bytes != raw {
		t.Fatalf("compressed pre-dump: page files of %d bytes for %d of memory (compressed %v; stats %d/%d): want a quarter at most of the stamped pages", stored, raw, compressed, st.Stored, st.Bytes)
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{p.Pid}, Dir: d2, Parent: "../1", Compress: true}); err != nil {
		t.Fatalf("compressed dump against the pre-dump: %v", err)
	}
	waitReaped(t, p)
	if c, _, inParent := imageOf(t, d2); c.Index.Kind != imagepb.Kind_KIND_INCREMENTAL || inParent == 0 {
		t.Fatalf("the final dump is %v with %d pages in the parent, want an incremental one", c.Index.Kind, inParent)
	}
	restore(t, d2)
	if got := ask(t, p.Pid, report, 1); !strings.HasPrefix(got, "ok ") {
		t.Fatalf("after the restore of a compressed chain: %s", got)
	}
}

// A compressed page file whose content is not zstd (its checksums made to match) fails the
// restore cleanly: nothing is left.
func TestCompressedImageDamaged(t *testing.T) {
	testutil.RequireRoot(t)
	p, _ := testutil.StartReady(t, "incr")
	img := filepath.Join(t.TempDir(), "img")
	if _, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img, Compress: true}); err != nil {
		t.Fatal(err)
	}
	waitReaped(t, p)
	c, name := damagePages(t, img, p.Pid, 0, []byte("not zstd at all"))
	var err error
	refused := func(what string) {
		t.Helper()
		_, err = core.Restore(t.Context(), core.RestoreOptions{Dir: img})
		t.Logf("%s: %v", what, err)
		if !errors.Is(err, image.ErrCorrupt) || !strings.Contains(err.Error(), name) {
			t.Fatalf("restore of a %s compressed page file: %v, want it refused naming %s", what, err, name)
		}
		if testutil.Alive(p.Pid) {
			t.Fatalf("the failed restore of a %s page file left the process", what)
		}
	}
	refused("damaged")
	// The same with the index's checksums made to match: the stream itself is refused.
	b, err := os.ReadFile(c.Path(name))
	if err != nil {
		t.Fatal(err)
	}
	idx := &imagepb.Index{}
	ib, _ := os.ReadFile(c.Path(image.IndexName))
	if err := proto.Unmarshal(ib, idx); err != nil {
		t.Fatal(err)
	}
	for _, e := range idx.Files {
		if e.Name == name {
			e.ChunkCrc32C = nil
			for off := 0; off < len(b); off += int(e.ChunkSize) {
				e.ChunkCrc32C = append(e.ChunkCrc32C, crc32.Checksum(b[off:min(len(b), off+int(e.ChunkSize))], crc32.MakeTable(crc32.Castagnoli)))
			}
		}
	}
	ib, _ = proto.Marshal(idx)
	if err := os.WriteFile(c.Path(image.IndexName), ib, 0o600); err != nil {
		t.Fatal(err)
	}
	refused("hostile")
}

// damagePages writes b at offset off of the page file of pid in the image, returning the
// image (as it was opened) and the file's name.
func damagePages(t *testing.T, img string, pid int, off int64, b []byte) (*image.Checkpoint, string) {
	t.Helper()
	c, err := image.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	name := c.Procs[int32(pid)].PagesFile
	f, err := os.OpenFile(c.Path(name), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	return c, name
}
