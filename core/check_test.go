package core_test

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/internal/testutil"
)

// editImage rewrites one metadata file of an image and fixes its index entry.
func editImage[M proto.Message](t *testing.T, dir, name string, m M, edit func(M)) {
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
	os.WriteFile(filepath.Join(dir, name), b, 0o600)
	idx := &imagepb.Index{}
	ib, _ := os.ReadFile(filepath.Join(dir, image.IndexName))
	proto.Unmarshal(ib, idx)
	for _, e := range idx.Files {
		if e.Name == name {
			e.Size, e.Crc32C = uint64(len(b)), crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))
		}
	}
	ib, _ = proto.Marshal(idx)
	os.WriteFile(filepath.Join(dir, image.IndexName), ib, 0o600)
}

func problems(t *testing.T, dir string) []core.Problem {
	t.Helper()
	rep, err := core.Check(dir)
	if rep == nil {
		t.Fatalf("check: %v", err)
	}
	if (err == nil) != (len(rep.Problems) == 0) || (err != nil && !errors.Is(err, core.ErrCheckFailed)) {
		t.Fatalf("check returned %v with %d problems", err, len(rep.Problems))
	}
	return rep.Problems
}

func TestCheckOnly(t *testing.T) {
	testutil.RequireRoot(t)
	// A copy of the binary, so that the test can change it.
	bin := testutil.CopyBinary(t, testutil.Build(t, "counter"))
	b, _ := os.ReadFile(bin)
	log := filepath.Join(t.TempDir(), "count.log")
	p := testutil.Start(t, bin, log)
	testutil.WaitFor(t, "counter to count", func() bool { return lastInt(t, log) >= 3 })

	img := filepath.Join(t.TempDir(), "img")
	if _, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img, CheckOnly: true}); err != nil {
		t.Fatal(err)
	}
	running(t, p.Pid, log)
	ents, _ := os.ReadDir(img)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "pages-") {
			t.Errorf("a check-only image holds %s", e.Name())
		}
	}
	if ok, err := core.IsCheckOnly(img); !ok || err != nil {
		t.Fatalf("image kind: check-only %v, %v", ok, err)
	}

	t.Run("pid in use is named", func(t *testing.T) {
		ps := problems(t, img)
		if len(ps) != 1 || ps[0].What != fmt.Sprintf("pid %d", p.Pid) || !strings.Contains(ps[0].Detail, "counter") {
			t.Fatalf("problems %v, want pid %d in use by counter", ps, p.Pid)
		}
	})
	p.Kill()
	t.Run("passes here", func(t *testing.T) {
		if ps := problems(t, img); len(ps) != 0 {
			t.Fatalf("problems on the machine of the dump: %v", ps)
		}
	})
	t.Run("a changed binary is named", func(t *testing.T) {
		b[len(b)/2] ^= 0xff
		os.WriteFile(bin, b, 0o755)
		defer func() { b[len(b)/2] ^= 0xff; os.WriteFile(bin, b, 0o755) }()
		ps := problems(t, img)
		if len(ps) != 1 || ps[0].What != bin || !strings.Contains(ps[0].Detail, "content differs") {
			t.Fatalf("problems %v, want %s named as changed", ps, bin)
		}
	})
	t.Run("too little memory is named", func(t *testing.T) {
		big := filepath.Join(t.TempDir(), "img")
		os.CopyFS(big, os.DirFS(img))
		// Claim 64 TiB of anonymous memory at 0x100000000000.
		editImage(t, big, image.ProcName(int32(p.Pid)), &imagepb.Process{}, func(pr *imagepb.Process) {
			const start, size = 0x100000000000, 64 << 40
			pr.Vmas = append([]*imagepb.VMA{{Start: start, End: start + size, Prot: 3, Kind: imagepb.VMAKind_VMA_KIND_ANON_PRIVATE}}, pr.Vmas...)
			pr.Pages = append([]*imagepb.PageRun{{Vaddr: start, NrPages: size / 4096}}, pr.Pages...)
			// Keep the mappings in address order.
			for i := 0; i+1 < len(pr.Vmas) && pr.Vmas[i].Start > pr.Vmas[i+1].Start; i++ {
				pr.Vmas[i], pr.Vmas[i+1] = pr.Vmas[i+1], pr.Vmas[i]
			}
			for i := 0; i+1 < len(pr.Pages) && pr.Pages[i].Vaddr > pr.Pages[i+1].Vaddr; i++ {
				pr.Pages[i], pr.Pages[i+1] = pr.Pages[i+1], pr.Pages[i]
			}
		})
		ps := problems(t, big)
		if len(ps) != 1 || ps[0].What != "memory" {
			t.Fatalf("problems %v, want memory", ps)
		}
	})
	t.Run("a full image checks the same", func(t *testing.T) {
		q := testutil.Start(t, bin, log)
		testutil.WaitFor(t, "counter", func() bool { return testutil.Alive(q.Pid) })
		full := dump(t, core.Kill, q.Pid)
		waitReaped(t, q)
		if ps := problems(t, full); len(ps) != 0 {
			t.Fatalf("problems: %v", ps)
		}
	})
}
