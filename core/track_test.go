package core_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/internal/testutil"
)

const trackPages = 1024

// trackJob is a running trackpages workload.
type trackJob struct {
	t    *testing.T
	p    *testutil.Proc
	dir  string
	addr uint64 // of its 1024-page buffer
	asks int
}

func startTrackJob(t *testing.T) *trackJob {
	testutil.RequireRoot(t)
	for _, f := range core.Features() {
		if strings.HasPrefix(f.Name, "userfaultfd write-protect") && !f.Present {
			t.Skipf("no %s here: %s", f.Name, f.Detail)
		}
	}
	p, dir := testutil.StartReady(t, "trackpages")
	addr, err := strconv.ParseUint(strings.TrimSpace(testutil.ReadFile(filepath.Join(dir, "addr"))), 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	return &trackJob{t: t, p: p, dir: dir, addr: addr}
}

// do has the workload run cmd ("write G P..." or "map") and waits until it has.
func (j *trackJob) do(cmd, done string) {
	j.t.Helper()
	os.Remove(filepath.Join(j.dir, done))
	if err := os.WriteFile(filepath.Join(j.dir, "cmd"), []byte(cmd+"\n"), 0o644); err != nil {
		j.t.Fatal(err)
	}
	syscall.Kill(j.p.Pid, syscall.SIGUSR2)
	testutil.WaitFor(j.t, "the workload to run "+cmd, func() bool {
		_, err := os.Stat(filepath.Join(j.dir, done))
		return err == nil
	})
}

func (j *trackJob) write(gen int, pages []int) {
	j.t.Helper()
	cmd := fmt.Sprintf("write %d", gen)
	for _, pg := range pages {
		cmd += " " + strconv.Itoa(pg)
	}
	j.do(cmd, fmt.Sprintf("done-%d", gen))
}

// check has the workload check its memory; it must be whole, with gen the last version.
func (j *trackJob) check(stage string, gen int) {
	j.t.Helper()
	j.asks++
	if got := ask(j.t, j.p.Pid, filepath.Join(j.dir, "report"), j.asks); got != fmt.Sprintf("ok %d", gen) {
		j.t.Fatalf("%s: the workload says %q, want \"ok %d\"", stage, got, gen)
	}
}

// pagesIn lists the buffer's pages in the ranges.
func (j *trackJob) pagesIn(ranges [][2]uint64) []int {
	var out []int
	end := j.addr + trackPages*4096
	for _, r := range ranges {
		for a := max(r[0], j.addr); a < min(r[1], end); a += 4096 {
			out = append(out, int((a-j.addr)/4096))
		}
	}
	return out
}

// shown is what Track reports written in the buffer.
func (j *trackJob) shown(reset bool) []int {
	j.t.Helper()
	rep, err := core.Track(j.t.Context(), core.TrackOptions{Roots: []int{j.p.Pid}, Reset: reset})
	if err != nil {
		j.t.Fatalf("track: %v", err)
	}
	if len(rep.Processes) != 1 || rep.Processes[0].Pid != j.p.Pid {
		j.t.Fatalf("track reports %+v, want pid %d alone", rep.Processes, j.p.Pid)
	}
	var ranges [][2]uint64
	for _, m := range rep.Processes[0].Mappings {
		if m.Start <= j.addr && j.addr < m.End && !m.Tracked {
			j.t.Fatalf("the buffer's mapping %#x-%#x is not tracked", m.Start, m.End)
		}
		ranges = append(ranges, m.Written...)
	}
	return j.pagesIn(ranges)
}

// imagePages lists the buffer's pages in an image, checking their content is version gen.
func (j *trackJob) imagePages(dir string, gen int) []int {
	j.t.Helper()
	c, err := image.Open(dir)
	if err != nil {
		j.t.Fatal(err)
	}
	proc := c.Procs[int32(j.p.Pid)]
	f, err := os.Open(c.Path(proc.PagesFile))
	if err != nil && len(proc.Pages) > 0 {
		j.t.Fatal(err)
	}
	if f != nil {
		defer f.Close()
	}
	var out []int
	off := int64(0)
	buf := make([]byte, 4096)
	for _, r := range proc.Pages {
		for k := uint64(0); k < r.NrPages; k++ {
			a := r.Vaddr + k*4096
			if a >= j.addr && a < j.addr+trackPages*4096 {
				pg := int((a - j.addr) / 4096)
				out = append(out, pg)
				if _, err := f.ReadAt(buf, off); err != nil {
					j.t.Fatal(err)
				}
				if w := uint32(buf[0]) | uint32(buf[1])<<8 | uint32(buf[2])<<16 | uint32(buf[3])<<24; w != uint32(pg)<<16|uint32(gen) {
					j.t.Fatalf("image %s: page %d holds %#x, want %#x", dir, pg, w, uint32(pg)<<16|uint32(gen))
				}
			}
			off += 4096
		}
	}
	return out
}

// Reset the tracking, write a known set of pages, and the report and a tracked dump hold
// exactly those pages, no more, no fewer, round after round.
func TestTrackWrittenPages(t *testing.T) {
	j := startTrackJob(t)
	rng := rand.New(rand.NewPCG(7, uint64(j.p.Pid)))
	if _, err := core.Track(t.Context(), core.TrackOptions{Roots: []int{j.p.Pid}, Reset: true}); err != nil {
		t.Fatalf("first reset: %v", err)
	}
	for round := 2; round <= 21; round++ {
		var want []int
		for _, pg := range rng.Perm(trackPages)[:rng.IntN(60)] {
			want = append(want, pg)
		}
		slices.Sort(want)
		j.write(round, want)
		if got := j.shown(false); !slices.Equal(got, want) {
			t.Fatalf("round %d: track shows pages %v written, want %v", round, got, want)
		}
		img := filepath.Join(t.TempDir(), "img")
		if _, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{j.p.Pid}, Dir: img, Final: core.LeaveRunning, Tracked: true, NoSync: true}); err != nil {
			t.Fatalf("round %d: tracked dump: %v", round, err)
		}
		if got := j.imagePages(img, round); !slices.Equal(got, want) {
			t.Fatalf("round %d: the tracked image holds pages %v, want %v", round, got, want)
		}
		// The report of a reset is what was written before it; after it, nothing.
		if got := j.shown(true); !slices.Equal(got, want) {
			t.Fatalf("round %d: track --show --reset shows %v, want %v", round, got, want)
		}
		if got := j.shown(false); len(got) != 0 {
			t.Fatalf("round %d: after the reset, track shows %v written", round, got)
		}
		j.check(fmt.Sprintf("round %d", round), round)
	}
	// A tracked image is not restored.
	img := filepath.Join(t.TempDir(), "img")
	if _, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{j.p.Pid}, Dir: img, Final: core.LeaveRunning, Tracked: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := core.Restore(t.Context(), core.RestoreOptions{Dir: img}); !errors.Is(err, core.ErrBadArgs) || !strings.Contains(err.Error(), "tracked dump") {
		t.Fatalf("restore of a tracked image: %v, want a refusal saying it is a tracked dump", err)
	}
	j.check("after all", 21)
}

// A tracked dump of a process whose tracking was never reset is refused, the process
// going on.
func TestTrackedDumpWithoutReset(t *testing.T) {
	j := startTrackJob(t)
	_, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{j.p.Pid}, Dir: filepath.Join(t.TempDir(), "img"), Final: core.LeaveRunning, Tracked: true})
	if !errors.Is(err, core.ErrBadArgs) || !strings.Contains(err.Error(), "gocr track") || !strings.Contains(err.Error(), strconv.Itoa(j.p.Pid)) {
		t.Fatalf("tracked dump without a reset: %v, want a refusal naming the pid and gocr track", err)
	}
	j.write(2, []int{3})
	j.check("after the refusal", 2)
}

// Apply brings a process's memory back to an image of itself: pages written since go back,
// pages the image does not hold become zeros again, and the process goes on from there.
func TestApplyRollsBack(t *testing.T) {
	j := startTrackJob(t)
	j.write(2, []int{1, 2, 3})
	base := filepath.Join(t.TempDir(), "base")
	// Compressed: apply reads it as the restore does.
	if _, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{j.p.Pid}, Dir: base, Final: core.LeaveRunning, TrackMem: true, Compress: true}); err != nil {
		t.Fatal(err)
	}
	// Pages of the first half changed, and of the second half (zeros at the dump) written.
	j.write(3, []int{2, 100, 600, 1000})
	j.check("before apply", 3)
	st, err := core.Apply(t.Context(), core.ApplyOptions{Root: j.p.Pid, Dir: base})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if st.Dropped < 2 {
		t.Errorf("apply dropped %d pages, want at least the 2 written beyond the image", st.Dropped)
	}
	j.check("after apply", 2) // the version table came back too: gen 2, pages 600, 1000 zeros
	j.write(4, []int{600})
	j.check("going on after apply", 4)

	// An incremental image on top of base, applied after more writes, brings back its time.
	incr := filepath.Join(t.TempDir(), "incr")
	if _, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{j.p.Pid}, Dir: incr, Final: core.LeaveRunning, Parent: base}); err != nil {
		t.Fatal(err)
	}
	j.write(5, []int{0, 600, 700})
	if _, err := core.Apply(t.Context(), core.ApplyOptions{Root: j.p.Pid, Dir: incr}); err != nil {
		t.Fatalf("apply an incremental image: %v", err)
	}
	j.check("after apply of the incremental image", 4)

	// A tracked image writes its own pages only.
	if _, err := core.Track(t.Context(), core.TrackOptions{Roots: []int{j.p.Pid}, Reset: true}); err != nil {
		t.Fatal(err)
	}
	j.write(6, []int{5, 6})
	delta := filepath.Join(t.TempDir(), "delta")
	if _, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{j.p.Pid}, Dir: delta, Final: core.LeaveRunning, Tracked: true}); err != nil {
		t.Fatal(err)
	}
	j.write(7, []int{5, 6})
	if _, err := core.Apply(t.Context(), core.ApplyOptions{Root: j.p.Pid, Dir: delta}); err != nil {
		t.Fatalf("apply a tracked image: %v", err)
	}
	j.check("after apply of the tracked image", 6)
}

// Apply onto a process whose address space changed is refused naming the mapping, and
// nothing is written.
func TestApplyRefusesChangedLayout(t *testing.T) {
	j := startTrackJob(t)
	base := filepath.Join(t.TempDir(), "base")
	if _, err := core.Dump(t.Context(), core.DumpOptions{Roots: []int{j.p.Pid}, Dir: base, Final: core.LeaveRunning}); err != nil {
		t.Fatal(err)
	}
	j.write(2, []int{7})
	j.do("map", "done-map")
	_, err := core.Apply(t.Context(), core.ApplyOptions{Root: j.p.Pid, Dir: base})
	if !errors.Is(err, core.ErrIncompatible) || !strings.Contains(err.Error(), "no longer matches") || !strings.Contains(err.Error(), "mapping 0x") {
		t.Fatalf("apply onto a changed layout: %v, want a refusal naming the mapping", err)
	}
	j.check("after the refused apply", 2)
	if _, err := core.Apply(t.Context(), core.ApplyOptions{Root: j.p.Pid + 100000, Dir: base}); !errors.Is(err, core.ErrNoProcess) {
		t.Fatalf("apply onto no process: %v", err)
	}
}
