package image

import (
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/gocr/gocr/core/image/imagepb"
)

// writeSample writes a small but complete image: one process with a heap, a file mapping and
// a stack, three pages, an fd on a pipe with bytes in it.
func writeSample(t testing.TB, dir string) {
	t.Helper()
	w, err := Create(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	writeSampleWith(t, w)
}

func writeSampleWith(t testing.TB, w *Writer) {
	t.Helper()
	pages, _ := w.CreateData(PagesName(100), 0)
	pages.Write(make([]byte, 3*4096))
	pages.Close()
	pipe, _ := w.CreateData(PipeDataName(1), 0)
	pipe.Write([]byte("abc"))
	pipe.Close()
	proc := &imagepb.Process{
		Pid: 100, Regs: &imagepb.Regs{Rip: 0x401000}, Xstate: make([]byte, 1024), Mm: &imagepb.MM{Auxv: make([]byte, 32)},
		Creds: &imagepb.Creds{Uids: []uint32{0, 0, 0, 0}, Gids: []uint32{0, 0, 0, 0}},
		Vmas: []*imagepb.VMA{
			{Start: 0x400000, End: 0x402000, Prot: 5, Kind: imagepb.VMAKind_VMA_KIND_FILE_PRIVATE, Path: "/bin/true"},
			{Start: 0x600000, End: 0x610000, Prot: 3, Kind: imagepb.VMAKind_VMA_KIND_HEAP},
			{Start: 0x7ff000000000, End: 0x7ff000021000, Prot: 3, Kind: imagepb.VMAKind_VMA_KIND_STACK},
		},
		PagesFile:  PagesName(100),
		Pages:      []*imagepb.PageRun{{Vaddr: 0x600000, NrPages: 2}, {Vaddr: 0x7ff000020000, NrPages: 1}},
		Fds:        []*imagepb.Fd{{Fd: 0, FileId: 1}},
		Sigactions: []*imagepb.SigAction{{Signo: 10, Handler: 0x401100}},
		Pending:    []*imagepb.SigInfo{{Signo: 12, Info: make([]byte, 128)}},
	}
	if err := w.WriteMessage(ProcName(100), proc); err != nil {
		t.Fatal(err)
	}
	tree := &imagepb.Tree{
		Roots:     []int32{100},
		Processes: []*imagepb.ProcessEntry{{Pid: 100, Ppid: 1, Pgid: 100, Sid: 1, Threads: []int32{100}}},
		Files:     []*imagepb.OpenFile{{Id: 1, Kind: imagepb.FileKind_FILE_KIND_PIPE, PipeId: 1}},
		Pipes:     []*imagepb.Pipe{{Id: 1, Capacity: 65536, DataLen: 3, DataFile: PipeDataName(1)}},
		Cpu:       &imagepb.CPU{XstateSize: 1024},
	}
	if err := w.WriteMessage(TreeName, tree); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(&imagepb.Index{Kind: imagepb.Kind_KIND_FULL}, false); err != nil {
		t.Fatal(err)
	}
}

// rewrite replaces file name of the image with b and fixes its index entry, so that the
// reader's checks beyond the checksum are reached.
func rewrite(t testing.TB, dir, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if name == IndexName {
		return
	}
	ib, err := os.ReadFile(filepath.Join(dir, IndexName))
	if err != nil {
		t.Fatal(err)
	}
	idx := &imagepb.Index{}
	if err := proto.Unmarshal(ib, idx); err != nil {
		t.Fatal(err)
	}
	for _, e := range idx.Files {
		if e.Name == name {
			e.Size, e.Crc32C = uint64(len(b)), crc32.Checksum(b, castagnoli)
		}
	}
	ib, _ = proto.Marshal(idx)
	os.WriteFile(filepath.Join(dir, IndexName), ib, 0o600)
}

func editMessage[M proto.Message](t *testing.T, dir, name string, m M, edit func(M)) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, _ = proto.Marshal(m)
	rewrite(t, dir, name, b)
}

func TestSampleImage(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	writeSample(t, dir)
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.VerifyData(); err != nil {
		t.Fatal(err)
	}
	if len(c.Procs) != 1 || c.Procs[100].Pages[1].Vaddr != 0x7ff000020000 {
		t.Fatalf("read back %v", c.Procs)
	}
	if _, err := Create(dir, false); !errors.Is(err, ErrExists) {
		t.Fatalf("create over an image: %v, want ErrExists", err)
	}
}

// Each damage is refused with an error that names the file.
func TestDamagedImages(t *testing.T) {
	proc := func(edit func(*imagepb.Process)) func(*testing.T, string) {
		return func(t *testing.T, dir string) { editMessage(t, dir, ProcName(100), &imagepb.Process{}, edit) }
	}
	tree := func(edit func(*imagepb.Tree)) func(*testing.T, string) {
		return func(t *testing.T, dir string) { editMessage(t, dir, TreeName, &imagepb.Tree{}, edit) }
	}
	for _, c := range []struct {
		name   string
		damage func(*testing.T, string)
		file   string // named in the error; "" for a version error
	}{
		{"page file flipped", func(t *testing.T, dir string) {
			p := filepath.Join(dir, PagesName(100))
			b, _ := os.ReadFile(p)
			b[5000] ^= 1
			os.WriteFile(p, b, 0o600)
		}, PagesName(100)},
		{"page file truncated", func(t *testing.T, dir string) { os.Truncate(filepath.Join(dir, PagesName(100)), 4096) }, PagesName(100)},
		{"page file missing", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, PagesName(100))) }, PagesName(100)},
		{"metadata flipped", func(t *testing.T, dir string) {
			p := filepath.Join(dir, ProcName(100))
			b, _ := os.ReadFile(p)
			b[3] ^= 0x10
			os.WriteFile(p, b, 0o600)
		}, ProcName(100)},
		{"index garbage", func(t *testing.T, dir string) { rewrite(t, dir, IndexName, []byte("\xff\xff\xff")) }, IndexName},
		{"index names a path outside", func(t *testing.T, dir string) {
			editMessage(t, dir, IndexName, &imagepb.Index{}, func(i *imagepb.Index) { i.Files[0].Name = "../escape.img" })
		}, IndexName},
		{"page run outside its mapping", proc(func(p *imagepb.Process) { p.Pages[0].NrPages = 100 }), ProcName(100)},
		{"page run in no mapping", proc(func(p *imagepb.Process) { p.Pages[0].Vaddr = 0x900000 }), ProcName(100)},
		{"page count beyond the page file", proc(func(p *imagepb.Process) { p.Pages[0].NrPages = 3 }), PagesName(100)},
		{"overlapping mappings", proc(func(p *imagepb.Process) { p.Vmas[1].Start = 0x401000 }), ProcName(100)},
		{"mapping beyond user space", proc(func(p *imagepb.Process) { p.Vmas[2].End = 1 << 62 }), ProcName(100)},
		{"fd on no file", proc(func(p *imagepb.Process) { p.Fds[0].FileId = 9 }), ProcName(100)},
		{"bad signal", proc(func(p *imagepb.Process) { p.Sigactions[0].Signo = 9 }), ProcName(100)},
		{"short siginfo", proc(func(p *imagepb.Process) { p.Pending[0].Info = p.Pending[0].Info[:10] }), ProcName(100)},
		{"xstate size", proc(func(p *imagepb.Process) { p.Xstate = p.Xstate[:512] }), ProcName(100)},
		{"pipe bytes beyond capacity", tree(func(tr *imagepb.Tree) { tr.Pipes[0].Capacity = 2 }), TreeName},
		{"pipe data length", tree(func(tr *imagepb.Tree) { tr.Pipes[0].DataLen = 5 }), PipeDataName(1)},
		{"incremental without a parent", func(t *testing.T, dir string) {
			editMessage(t, dir, IndexName, &imagepb.Index{}, func(i *imagepb.Index) { i.Kind = imagepb.Kind_KIND_INCREMENTAL })
		}, IndexName},
		{"absolute parent", func(t *testing.T, dir string) {
			editMessage(t, dir, IndexName, &imagepb.Index{}, func(i *imagepb.Index) { i.Kind, i.Parent = imagepb.Kind_KIND_INCREMENTAL, "/etc" })
		}, IndexName},
		{"pages in a parent of a full image", proc(func(p *imagepb.Process) { p.Pages[1].InParent = true }), ProcName(100)},
		{"network lock that is not gocr's", tree(func(tr *imagepb.Tree) { tr.NetLock = "filter" }), TreeName},
		{"negative session", tree(func(tr *imagepb.Tree) { tr.Processes[0].Sid = -1 }), TreeName},
		{"parent missing", tree(func(tr *imagepb.Tree) { tr.Roots = []int32{100}; tr.Processes[0].Pid = 101 }), ProcName(101)},
		{"symlink in place of a file", func(t *testing.T, dir string) {
			p := filepath.Join(dir, PagesName(100))
			os.Remove(p)
			os.Symlink("/etc/passwd", p)
		}, PagesName(100)},
		{"two files swapped", func(t *testing.T, dir string) {
			a, b := filepath.Join(dir, TreeName), filepath.Join(dir, ProcName(100))
			os.Rename(a, a+".x")
			os.Rename(b, a)
			os.Rename(a+".x", b)
		}, ProcName(100)},
		{"a metadata file said compressed", func(t *testing.T, dir string) {
			editMessage(t, dir, IndexName, &imagepb.Index{}, func(i *imagepb.Index) {
				for _, e := range i.Files {
					if e.Name == TreeName {
						e.Compression, e.RawSize = imagepb.Compression_COMPRESSION_ZSTD, e.Size
					}
				}
			})
		}, IndexName},
		{"version", func(t *testing.T, dir string) {
			editMessage(t, dir, IndexName, &imagepb.Index{}, func(i *imagepb.Index) { i.FormatVersion = 99 })
		}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "img")
			writeSample(t, dir)
			c.damage(t, dir)
			ck, err := Open(dir)
			if err == nil {
				err = ck.VerifyData()
			}
			if c.file == "" {
				if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "99") {
					t.Fatalf("got %v, want ErrVersion naming 99", err)
				}
				return
			}
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.File != c.file {
				t.Fatalf("got %v, want a CorruptError naming %s", err, c.file)
			}
		})
	}
}

// FuzzImage feeds arbitrary bytes as one file of an otherwise valid image (index entry
// fixed up, so that the checks past the checksum run): the reader must refuse or accept,
// never panic or hang.
func FuzzImage(f *testing.F) {
	names := []string{IndexName, TreeName, ProcName(100), PagesName(100), PipeDataName(1)}
	base := filepath.Join(f.TempDir(), "base")
	writeSample(f, base)
	for i, n := range names {
		b, _ := os.ReadFile(filepath.Join(base, n))
		f.Add(uint8(i), b)
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		dir := filepath.Join(t.TempDir(), "img")
		if err := os.CopyFS(dir, os.DirFS(base)); err != nil {
			t.Fatal(err)
		}
		rewrite(t, dir, names[int(which)%len(names)], data)
		if c, err := Open(dir); err == nil {
			c.VerifyData()
		}
	})
}

// An image written into a directory (CreateIn, as CRIU writes) leaves the directory the same
// one, with its other files, and replaces an image there; it reads back whole.
func TestCreateIn(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dump.log"), []byte("log"), 0o600); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		w, err := CreateIn(dir)
		if err != nil {
			t.Fatal(err)
		}
		writeSampleWith(t, w)
		if _, err := Open(dir); err != nil {
			t.Fatalf("image %d: %v", i, err)
		}
	}
	after, err := os.Stat(dir)
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("the directory was replaced (%v)", err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "dump.log")); err != nil || string(b) != "log" {
		t.Errorf("the log: %q, %v", b, err)
	}
	if _, err := CreateIn(filepath.Join(dir, "none")); err == nil {
		t.Error("CreateIn of a directory that does not exist: no error")
	}
}
