package amdgpu_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/internal/testutil"
	"github.com/gocr/gocr/plugins/amdgpu/internal/kfdemu"
)

// BenchmarkGPUJob1GiB dumps and restores a two-process GPU job holding 1 GiB of VRAM BOs
// (2 processes x 2 GPUs x 256 MiB, plus GTT and USERPTR BOs) through the emulator, and reports
// the BO memory moved per second each way and how much of the dump the tree was frozen.
func BenchmarkGPUJob1GiB(b *testing.B) {
	emu, _ := emulate(b, kfdemu.Config{GPUs: gpus(0x1001, 0x1002)})
	plugins := plugin(b)
	var dumpT, restoreT, frozen, commit time.Duration
	var bytes uint64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		j := startJob(b, 256<<10)
		bytes = emu.BOBytes()
		b.StartTimer()
		dir := filepath.Join(b.TempDir(), "img")
		st, err := core.Dump(context.Background(), core.DumpOptions{Roots: []int{j.parent.Pid}, Dir: dir, Plugins: []string{"amdgpu"},
			PluginDirs: []string{plugins}, PluginTimeout: 10 * time.Minute})
		if err != nil {
			b.Fatalf("dump: %v", err)
		}
		dumpT += st.Total
		frozen += st.Frozen
		commit += st.Commit
		b.StopTimer()
		j.killedByDump(b)
		b.StartTimer()
		t0 := time.Now()
		res, err := core.Restore(context.Background(), core.RestoreOptions{Dir: dir, PluginDirs: []string{plugins}, PluginTimeout: 10 * time.Minute})
		if err != nil {
			b.Fatalf("restore: %v", err)
		}
		restoreT += time.Since(t0)
		b.StopTimer()
		for _, pid := range res.Pids {
			testutil.KillAndReap(pid)
		}
		b.StartTimer()
	}
	n := float64(b.N)
	mb := float64(bytes) / 1e6
	b.ReportMetric(mb, "MB-of-BOs")
	b.ReportMetric(mb/(dumpT.Seconds()/n), "dump-MB/s")
	b.ReportMetric(frozen.Seconds()/n*1000, "frozen-ms")
	b.ReportMetric(commit.Seconds()/n*1000, "commit-ms")
	b.ReportMetric(mb/(restoreT.Seconds()/n), "restore-MB/s")
}
