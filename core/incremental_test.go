package core_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/internal/testutil"
)

// imageOf opens an image and sums its page runs: pages in its page files, and pages it
// leaves to its parent.
func imageOf(t *testing.T, dir string) (c *image.Checkpoint, own, inParent uint64) {
	t.Helper()
	c, err := image.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range c.Procs {
		for _, r := range p.Pages {
			if r.InParent {
				inParent += r.NrPages
			} else {
				own += r.NrPages
			}
		}
	}
	return c, own, inParent
}

// A process whose memory keeps changing is pre-dumped with its memory tracked, dumped again
// against that image, and finally dumped (killed) against the second one. The later images
// hold only what was written in between, refer to their parents for the rest, and the
// restore from the last one brings back every page as the process itself checks it: pages
// written, pages dropped (zeros), pages untouched since the first image.
func TestIncrementalDumps(t *testing.T) {
	testutil.RequireRoot(t)
	p, dir := testutil.StartReady(t, "incr")
	base := t.TempDir()
	report := filepath.Join(dir, "report")
	checkSelf := func(stage string, lines int) {
		t.Helper()
		syscall.Kill(p.Pid, syscall.SIGUSR1)
		testutil.WaitFor(t, stage+": a report", func() bool { return len(testutil.Lines(report)) >= lines })
		if got := testutil.Lines(report)[lines-1]; !strings.HasPrefix(got, "ok ") {
			t.Fatalf("%s: the process finds its memory wrong: %s", stage, got)
		}
	}
	dumpTo := func(name string, final core.FinalState, track bool, parent string) string {
		t.Helper()
		d := filepath.Join(base, name)
		_, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{p.Pid}, Dir: d, Final: final, TrackMem: track, Parent: parent,
			PreDump: name == "1" || name == "2"})
		if err != nil {
			t.Fatalf("dump %s: %v", name, err)
		}
		return d
	}
	incremental := func(name, dir, parent string, full uint64, kind imagepb.Kind) {
		t.Helper()
		c, own, inParent := imageOf(t, dir)
		if c.Index.Kind != kind || c.Index.Parent != parent || own*4 > full || inParent == 0 {
			t.Fatalf("%s image: kind %v parent %q, %d pages of its own and %d in the parent (a full one has %d); want an incremental image with few pages",
				name, c.Index.Kind, c.Index.Parent, own, inParent, full)
		}
	}

	// Two pre-dumps (memory read while the process writes on), then a consistent dump.
	d1 := dumpTo("1", core.LeaveRunning, true, "")
	c1, full, _ := imageOf(t, d1)
	if c1.Index.Kind != imagepb.Kind_KIND_PRE_DUMP || c1.Procs[int32(p.Pid)].Tracker == nil {
		t.Fatalf("first image: kind %v, tracker %v; want a pre-dump with a tracker", c1.Index.Kind, c1.Procs[int32(p.Pid)].Tracker)
	}
	checkSelf("after the first dump", 1)
	time.Sleep(100 * time.Millisecond)
	d2 := dumpTo("2", core.LeaveRunning, true, "../1")
	incremental("second", d2, "../1", full, imagepb.Kind_KIND_PRE_DUMP)
	time.Sleep(100 * time.Millisecond)
	d3 := dumpTo("3", core.LeaveRunning, true, "../2")
	incremental("third", d3, "../2", full, imagepb.Kind_KIND_INCREMENTAL)
	checkSelf("after the third dump", 2)

	// The tracker was reset since image 1: against it, the written bits would miss what was
	// written before the later dumps, so such a dump is full.
	dx := dumpTo("x", core.LeaveRunning, false, "../1")
	if cx, _, parentX := imageOf(t, dx); cx.Index.Kind != imagepb.Kind_KIND_FULL || parentX != 0 {
		t.Fatalf("a dump against a parent older than the last reset: kind %v, %d pages in the parent; want a full image", cx.Index.Kind, parentX)
	}
	time.Sleep(100 * time.Millisecond)
	d4 := dumpTo("4", core.Kill, false, "../3")
	waitReaped(t, p)
	incremental("last", d4, "../3", full, imagepb.Kind_KIND_INCREMENTAL)
	// A pre-dump is not consistent on its own: it is never restored itself.
	if _, err := core.Restore(t.Context(), core.RestoreOptions{Dir: d2}); !errors.Is(err, core.ErrBadArgs) || !strings.Contains(err.Error(), "pre-dump") {
		t.Fatalf("restore of a pre-dump: %v", err)
	}

	// Without an image of its chain, the last one cannot be restored, and nothing is made.
	os.Rename(d2, d2+".away")
	if _, err := core.Restore(t.Context(), core.RestoreOptions{Dir: d4}); !errors.Is(err, image.ErrNoImage) || !strings.Contains(err.Error(), "parent image") {
		t.Fatalf("restore without a parent image: %v", err)
	}
	if testutil.Alive(p.Pid) {
		t.Fatal("a failed restore left the process")
	}
	os.Rename(d2+".away", d2)

	// The restore takes pages from all four images of the chain, two of them read while the
	// process wrote on.
	restore(t, d4)
	checkSelf("after the restore", len(testutil.Lines(report))+1)
}
