package core_test

import (
	"context"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/internal/testutil"
)

// Dump, restore, dump again: the second image agrees with the first on everything that does
// not move while a process runs. This checks what no /proc file shows: rseq, robust list,
// tid address, signal actions, the mm fields and auxv.
func TestRestoreIsExact(t *testing.T) {
	testutil.RequireRoot(t)
	p, _ := testutil.StartReady(t, "state")
	img1 := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)
	restore(t, img1)
	img2 := dump(t, core.LeaveRunning, p.Pid)

	c1, err := image.Open(img1)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := image.Open(img2)
	if err != nil {
		t.Fatal(err)
	}
	a, b := c1.Procs[int32(p.Pid)], c2.Procs[int32(p.Pid)]
	same := func(what string, x, y proto.Message) {
		t.Helper()
		if !proto.Equal(x, y) {
			t.Errorf("%s differs after restore:\n before %v\n after  %v", what, x, y)
		}
	}
	same("mm fields", a.Mm, b.Mm)
	same("rseq", a.Rseq, b.Rseq)
	same("credentials", a.Creds, b.Creds)
	same("sigaltstack", a.Altstack, b.Altstack)
	if a.TidAddress != b.TidAddress || a.RobustList != b.RobustList || a.RobustListLen != b.RobustListLen {
		t.Errorf("tid address / robust list: before %#x %#x/%d, after %#x %#x/%d",
			a.TidAddress, a.RobustList, a.RobustListLen, b.TidAddress, b.RobustList, b.RobustListLen)
	}
	if a.Rseq == nil {
		t.Errorf("no rseq registration dumped (glibc registers one)")
	}
	if len(a.Sigactions) != len(b.Sigactions) {
		t.Fatalf("%d signal actions before, %d after", len(a.Sigactions), len(b.Sigactions))
	}
	for i := range a.Sigactions {
		same("signal action", a.Sigactions[i], b.Sigactions[i])
	}
	// Adjacent mappings that differ only in holding copied pages may come back merged (the
	// kernel merges them once they have the same protection): compare merged layouts.
	va, vb := mergedLayout(a.Vmas), mergedLayout(b.Vmas)
	if len(va) != len(vb) {
		t.Fatalf("layout before %v, after %v", va, vb)
	}
	for i := range va {
		if va[i] != vb[i] {
			t.Errorf("mapping %d: before %+v, after %+v", i, va[i], vb[i])
		}
	}
	if a.Cwd != b.Cwd || a.Umask != b.Umask || a.Comm != b.Comm || a.Personality != b.Personality || a.Sigmask != b.Sigmask {
		t.Errorf("cwd/umask/comm/personality/mask: before %s %o %s %d %#x, after %s %o %s %d %#x",
			a.Cwd, a.Umask, a.Comm, a.Personality, a.Sigmask, b.Cwd, b.Umask, b.Comm, b.Personality, b.Sigmask)
	}
}

// An image from a CPU with another XSTATE layout is refused before any process is made.
func TestRestoreRefusesOtherCPU(t *testing.T) {
	testutil.RequireRoot(t)
	log := filepath.Join(t.TempDir(), "count.log")
	p := testutil.Start(t, testutil.Build(t, "counter"), log)
	testutil.WaitFor(t, "counter to count", func() bool { return lastInt(t, log) >= 3 })
	img := dump(t, core.Kill, p.Pid)
	waitReaped(t, p)

	// Claim the image came from a CPU with one more XSTATE feature, keeping it consistent:
	// the first feature this CPU does not have (AMX, bit 17, is on here on some machines).
	tree := &imagepb.Tree{}
	b, _ := os.ReadFile(filepath.Join(img, image.TreeName))
	proto.Unmarshal(b, tree)
	for bit := 2; bit < 63; bit++ {
		if tree.Cpu.Xfeatures&(1<<bit) == 0 {
			tree.Cpu.Xfeatures |= 1 << bit
			break
		}
	}
	b, _ = proto.Marshal(tree)
	os.WriteFile(filepath.Join(img, image.TreeName), b, 0o600)
	idx := &imagepb.Index{}
	ib, _ := os.ReadFile(filepath.Join(img, image.IndexName))
	proto.Unmarshal(ib, idx)
	for _, e := range idx.Files {
		if e.Name == image.TreeName {
			e.Size, e.Crc32C = uint64(len(b)), crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))
		}
	}
	ib, _ = proto.Marshal(idx)
	os.WriteFile(filepath.Join(img, image.IndexName), ib, 0o600)

	_, err := core.Restore(context.Background(), core.RestoreOptions{Dir: img})
	if !errors.Is(err, core.ErrIncompatible) {
		t.Fatalf("got %v, want ErrIncompatible", err)
	}
	gone(t, p.Pid)
}

type span struct {
	start, end, pgoff uint64
	prot              uint32
	kind              imagepb.VMAKind
	path              string
}

func mergedLayout(vmas []*imagepb.VMA) []span {
	var out []span
	for _, v := range vmas {
		s := span{v.Start, v.End, v.Pgoff, v.Prot, v.Kind, v.Path}
		if n := len(out); n > 0 {
			l := &out[n-1]
			if l.end == s.start && l.prot == s.prot && l.kind == s.kind && l.path == s.path &&
				(s.path == "" || l.pgoff+(l.end-l.start) == s.pgoff) {
				l.end = s.end
				continue
			}
		}
		out = append(out, s)
	}
	return out
}

// Memory in thousands of separate runs (every other page of 16384 written) comes back page
// for page: the scan of such a mapping needs many PAGEMAP_SCAN calls.
func TestRestoreSparseMemory(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "sparse")
	if got := restoreAndAsk(t, p, dir); got != "ok" {
		t.Fatalf("after restore: %s", got)
	}
}
