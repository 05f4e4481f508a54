package core_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/core/internal/pluginhost"
	"github.com/gocr/gocr/internal/testutil"
)

var benchSizes = []int{512, 2048} // MiB

// startBig starts bigmem holding mib MiB and waits until it is filled.
func startBig(b testing.TB, mib int) *testutil.Proc {
	testutil.RequireRoot(b)
	p, _ := testutil.StartReady(b, "bigmem", fmt.Sprint(mib))
	return p
}

// BenchmarkDump dumps a process holding 512 MiB and 2 GiB, leaving it running; MB/s is of
// the memory written. The image is synced to disk as a default dump does.
func BenchmarkDump(b *testing.B) {
	for _, sync := range []bool{true, false} {
		for _, mib := range benchSizes {
			name := fmt.Sprintf("%dMiB", mib)
			if !sync {
				name += "/nosync"
			}
			b.Run(name, func(b *testing.B) {
				p := startBig(b, mib)
				b.SetBytes(int64(mib) << 20)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					dir := filepath.Join(b.TempDir(), "img")
					st, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: dir, Final: core.LeaveRunning, NoSync: !sync})
					if err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					b.ReportMetric(st.Memory.Seconds()*1000, "ms-memory")
					b.ReportMetric(st.Commit.Seconds()*1000, "ms-commit")
					b.ReportMetric(st.Collect.Seconds()*1000, "ms-collect")
					b.ReportMetric(st.Frozen.Seconds()*1000, "ms-frozen")
					b.ReportMetric(st.Total.Seconds()*1000, "ms-total")
					os.RemoveAll(dir)
					b.StartTimer()
				}
			})
		}
	}
}

// BenchmarkRestore restores a process holding 512 MiB and 2 GiB from a warm image; MB/s is
// of the memory filled, the checksum pass over the image included.
func BenchmarkRestore(b *testing.B) {
	for _, mib := range benchSizes {
		b.Run(fmt.Sprintf("%dMiB", mib), func(b *testing.B) {
			p := startBig(b, mib)
			dir := filepath.Join(b.TempDir(), "img")
			if _, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: dir, NoSync: true}); err != nil {
				b.Fatal(err)
			}
			p.Reap()
			b.SetBytes(int64(mib) << 20)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				res, err := core.Restore(context.Background(), core.RestoreOptions{Dir: dir})
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				b.ReportMetric(res.Stats.Verify.Seconds()*1000, "ms-verify")
				b.ReportMetric(res.Stats.Memory.Seconds()*1000, "ms-fill")
				b.ReportMetric(res.Stats.Create.Seconds()*1000, "ms-create")
				b.ReportMetric(res.Stats.Total.Seconds()*1000, "ms-total")
				testutil.KillAndReap(res.Pids[0])
				b.StartTimer()
			}
		})
	}
}

// BenchmarkRestoreMany restores a process with 64 threads, and one with 1000 open files.
func BenchmarkRestoreMany(b *testing.B) {
	for _, c := range []struct {
		name, kind, n string
	}{{"64threads", "threads", "64"}, {"1000fds", "fds", "1000"}} {
		b.Run(c.name, func(b *testing.B) {
			testutil.RequireRoot(b)
			p, _ := testutil.StartReady(b, "many", c.kind, c.n)
			dir := filepath.Join(b.TempDir(), "img")
			if _, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: dir, NoSync: true}); err != nil {
				b.Fatal(err)
			}
			p.Reap()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				res, err := core.Restore(context.Background(), core.RestoreOptions{Dir: dir})
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				b.ReportMetric(float64(res.Stats.Syscalls), "injected-syscalls")
				testutil.KillAndReap(res.Pids[0])
				b.StartTimer()
			}
		})
	}
}

// BenchmarkDumpMany dumps the same two processes, leaving them running.
func BenchmarkDumpMany(b *testing.B) {
	for _, c := range []struct {
		name, kind, n string
	}{{"64threads", "threads", "64"}, {"1000fds", "fds", "1000"}} {
		b.Run(c.name, func(b *testing.B) {
			testutil.RequireRoot(b)
			p, _ := testutil.StartReady(b, "many", c.kind, c.n)
			for i := 0; i < b.N; i++ {
				dir := filepath.Join(b.TempDir(), "img")
				if _, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: dir, NoSync: true, Final: core.LeaveRunning}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPluginRoundTrip is the cost of one plugin call (DumpFile) from the host to the
// example plugin's process and back.
func BenchmarkPluginRoundTrip(b *testing.B) {
	testutil.RequireRoot(b)
	pluginDir := testutil.BuildPlugin(b, "sdk/example/gocr-plugin-example", "example")
	h, err := pluginhost.Start(context.Background(), []string{"example"}, []string{pluginDir}, "dump", 0, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close(true)
	p, err := h.Claim("/tmp/gocr-example/x", 0, false)
	if err != nil || p == nil {
		b.Fatalf("claim: %v", err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.DumpFile(context.Background(), p, pluginhost.File{Pid: 1, Fd: 3, Path: "/tmp/gocr-example/x"}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRestorePluginFiles restores a process with 1000 files claimed by the example plugin.
func BenchmarkRestorePluginFiles(b *testing.B) {
	testutil.RequireRoot(b)
	pluginDir := testutil.BuildPlugin(b, "sdk/example/gocr-plugin-example", "example")
	dir := b.TempDir()
	b.Setenv("GOCR_EXAMPLE_PREFIX", dir+"/")
	p := testutil.Start(b, testutil.Build(b, "many"), dir, "fds", "1000")
	testutil.WaitFor(b, "many to be ready", func() bool { _, err := os.Stat(filepath.Join(dir, "ready")); return err == nil })
	img := filepath.Join(b.TempDir(), "img")
	if _, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: img, NoSync: true, Plugins: []string{"example"}, PluginDirs: []string{pluginDir}}); err != nil {
		b.Fatal(err)
	}
	p.Reap()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := core.Restore(context.Background(), core.RestoreOptions{Dir: img, PluginDirs: []string{pluginDir}})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		testutil.KillAndReap(res.Pids[0])
		b.StartTimer()
	}
}

// BenchmarkDumpIncremental takes a dump of a 2 GiB process against the one before it, with
// memory tracked and nothing written in between: what a final dump after pre-dumps costs
// when the job is quiet. Compare with BenchmarkDump/2048MiB, which writes it all.
func BenchmarkDumpIncremental(b *testing.B) {
	p := startBig(b, 2048)
	base := b.TempDir()
	prev := filepath.Join(base, "0")
	if _, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: prev, Final: core.LeaveRunning, TrackMem: true, NoSync: true}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dir := filepath.Join(base, fmt.Sprint(i+1))
		st, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: dir, Final: core.LeaveRunning, TrackMem: true, Parent: "../" + filepath.Base(prev)})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric(float64(st.Bytes), "bytes-written")
		b.ReportMetric(st.Frozen.Seconds()*1000+st.Collect.Seconds()*1000+st.Memory.Seconds()*1000, "ms-frozen")
		prev = dir
		b.StartTimer()
	}
}

// BenchmarkPreDump pre-dumps a 2 GiB process with no parent: every page is written out, but
// the process is frozen only while its state is collected and its pages marked.
func BenchmarkPreDump(b *testing.B) {
	p := startBig(b, 2048)
	b.SetBytes(2048 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dir := filepath.Join(b.TempDir(), "img")
		st, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: dir, PreDump: true, NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric(st.Frozen.Seconds()*1000+st.Collect.Seconds()*1000, "ms-frozen")
		os.RemoveAll(dir)
		b.StartTimer()
	}
}

// BenchmarkContainer dumps (leaving it running) and restores a container of 20 processes with
// its own pid, UTS, IPC and network namespaces: the container workload, its helper, and 18
// sleeps its init started.
func BenchmarkContainer(b *testing.B) {
	testutil.RequireRoot(b)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		b.Skip("unshare (util-linux) is not installed")
	}
	bin := testutil.Build(b, "container")
	dir := b.TempDir()
	u := testutil.Start(b, unshare, "--pid", "--fork", "--uts", "--ipc", "--net", "sh", "-c",
		`for i in $(seq 18); do sleep 1000 & done; exec "$0" "$@"`, bin, dir, "8080")
	testutil.WaitFor(b, "the container to count", func() bool { return testutil.LastCount(filepath.Join(dir, "root.log")) >= 3 })
	root := testutil.Children(u.Pid)[0]
	testutil.Adopt(b, root) // killing unshare leaves its child running: end the namespace's init
	img := filepath.Join(b.TempDir(), "img")
	b.Run("dump", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			os.RemoveAll(img)
			st, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{root}, Dir: img, Final: core.LeaveRunning, NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			if st.Processes != 20 {
				b.Fatalf("dumped %d processes, want 20", st.Processes)
			}
			b.ReportMetric(st.Frozen.Seconds()*1000, "ms-frozen")
		}
	})
	b.Run("restore", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			res, err := core.Restore(context.Background(), core.RestoreOptions{Dir: img})
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(res.Stats.Total.Seconds()*1000, "ms-total")
			testutil.KillAndReap(res.Roots[0]) // its init: the namespace ends with it
			b.StartTimer()
		}
	})
}

// BenchmarkCompressed dumps (not synced) and restores a process holding 512 MiB with
// --compress; MB/s is of the memory, "stored-%" what the page file takes of it. bigmem's
// pattern (each word a multiple of a large odd number) is the hard case for zstd.
func BenchmarkCompressed(b *testing.B) {
	const mib = 512
	p := startBig(b, mib)
	dir := filepath.Join(b.TempDir(), "img")
	b.Run("dump", func(b *testing.B) {
		b.SetBytes(mib << 20)
		for i := 0; i < b.N; i++ {
			os.RemoveAll(dir)
			st, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: dir, Final: core.LeaveRunning, NoSync: true, Compress: true})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(100*float64(st.Stored)/float64(st.Bytes), "stored-%")
		}
	})
	p.Kill()
	b.Run("restore", func(b *testing.B) {
		b.SetBytes(mib << 20)
		for i := 0; i < b.N; i++ {
			res, err := core.Restore(context.Background(), core.RestoreOptions{Dir: dir})
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(res.Stats.Memory.Seconds()*1000, "ms-fill")
			testutil.KillAndReap(res.Pids[0])
			b.StartTimer()
		}
	})
}

// BenchmarkLazyRestore restores a process holding 2 GiB with LazyPages: "ms-running" is
// until the restore returns with the tree running, "ms-all-in" until every page is in.
func BenchmarkLazyRestore(b *testing.B) {
	const mib = 2048
	testutil.RequireRoot(b)
	p, _ := testutil.StartReady(b, "lazymem", fmt.Sprint(mib))
	dir := filepath.Join(b.TempDir(), "img")
	if _, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: dir, NoSync: true}); err != nil {
		b.Fatal(err)
	}
	p.Reap()
	b.SetBytes(mib << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		res, err := core.Restore(context.Background(), core.RestoreOptions{Dir: dir, LazyPages: true})
		if err != nil {
			b.Fatal(err)
		}
		running := time.Since(t0)
		if err := res.WaitPages(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric(running.Seconds()*1000, "ms-running")
		b.ReportMetric(time.Since(t0).Seconds()*1000, "ms-all-in")
		testutil.KillAndReap(res.Pids[0])
		b.StartTimer()
	}
}

// BenchmarkPreDumpCycle is the migration cycle on a process holding 2 GiB: a pre-dump, one
// page in a hundred rewritten, then the final dump (killing it) against the pre-dump.
// "ms-frozen" is how long the process stays frozen in the final dump (in the pre-dump: "ms-
// pre-frozen"); "MB-final" what the final dump writes.
func BenchmarkPreDumpCycle(b *testing.B) {
	testutil.RequireRoot(b)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		p, dir := testutil.StartReady(b, "bigmem", "2048")
		base := b.TempDir()
		b.StartTimer()
		pre, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: filepath.Join(base, "1"), PreDump: true, NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		syscall.Kill(p.Pid, syscall.SIGUSR2)
		testutil.WaitFor(b, "the rewrite", func() bool { return len(testutil.Lines(filepath.Join(dir, "report"))) >= 1 })
		b.StartTimer()
		st, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{p.Pid}, Dir: filepath.Join(base, "2"), Parent: "../1", NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		p.Reap()
		b.ReportMetric(pre.Frozen.Seconds()*1000+pre.Collect.Seconds()*1000, "ms-pre-frozen")
		b.ReportMetric((st.Frozen+st.Collect+st.Memory+st.Commit).Seconds()*1000, "ms-frozen")
		b.ReportMetric(float64(st.Bytes)/1e6, "MB-final")
		b.ReportMetric(st.Collect.Seconds()*1000, "ms-collect")
		b.ReportMetric(st.Memory.Seconds()*1000, "ms-memory")
		b.ReportMetric(st.Commit.Seconds()*1000, "ms-commit")
		os.RemoveAll(base)
		b.StartTimer()
	}
}
