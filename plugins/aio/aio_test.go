package aio_test

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// A process with an AIO context and two completions it has not read is dumped and restored
// with the aio plugin: it reads both after the restore, its context id still works for new
// requests, and without the plugin the dump is refused by name.
func TestRestoreAIORing(t *testing.T) {
	testutil.RequireRoot(t)
	plugins := testutil.BuildPlugin(t, "plugins/aio/gocr-plugin-aio", "aio")
	p, dir := testutil.StartReady(t, "aioring")
	ctx := context.Background()

	_, err := core.Dump(ctx, core.DumpOptions{Roots: []int{p.Pid}, Dir: filepath.Join(t.TempDir(), "img")})
	if err == nil || !strings.Contains(err.Error(), "[aio]") || !strings.Contains(err.Error(), "--plugin aio") {
		t.Fatalf("dump without the plugin: %v, want a refusal naming the AIO ring", err)
	}
	opts := core.DumpOptions{Roots: []int{p.Pid}, Plugins: []string{"aio"}, PluginDirs: []string{plugins}}
	opts.Dir, opts.Final = filepath.Join(t.TempDir(), "img"), core.LeaveRunning
	if _, err := core.Dump(ctx, opts); err != nil {
		t.Fatalf("dump leaving it running: %v", err)
	}
	opts.Dir, opts.Final = filepath.Join(t.TempDir(), "img"), core.Kill
	if _, err := core.Dump(ctx, opts); err != nil {
		t.Fatalf("dump: %v", err)
	}
	p.Reap()
	res, err := core.Restore(ctx, core.RestoreOptions{Dir: opts.Dir, PluginDirs: []string{plugins}})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	for _, pid := range res.Pids {
		testutil.Adopt(t, pid)
	}
	syscall.Kill(p.Pid, syscall.SIGUSR1)
	report := filepath.Join(dir, "report")
	testutil.WaitFor(t, "a report", func() bool { return len(testutil.Lines(report)) > 0 })
	if got, want := testutil.Lines(report)[0], "events=102,103 more=104 ctx=same"; got != want {
		t.Fatalf("after restore: %s, want %s", got, want)
	}
}
