// Command gocr-plugin-example is the example plugin of the gocr SDK: it claims regular files
// under a path prefix and saves, for each fd, its path, flags and offset; at restore it opens
// the file again there. It is also the plugin the tests use to check the ordering contract:
// with GOCR_EXAMPLE_LOG set, it logs every call with its start and end times.
//
// Environment:
//
//	GOCR_EXAMPLE_PREFIX  path prefix of the files it claims (default /tmp/gocr-example/)
//	GOCR_EXAMPLE_LOG     file to log calls to: "HOOK PID FD PATH START_NS END_NS"
//	GOCR_EXAMPLE_DELAY   milliseconds each RestoreFile takes (to show calls overlapping)
//	GOCR_EXAMPLE_CRASH   "dump" or "restore": exit in the middle of that hook
//	GOCR_EXAMPLE_HANG    "dump" or "restore": never return from that hook
//	GOCR_EXAMPLE_API     the plugin API version to claim to speak (to test a mismatch)
//
// A file whose name ends in ".wait" is restored only once a file ending in ".signal" has
// been restored for another process: a call waiting for another process's call.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gocr/gocr/sdk"
)

type example struct {
	prefix string
	log    *os.File
	mu     sync.Mutex
	signal chan struct{} // closed once a ".signal" file is restored
	once   sync.Once
}

type saved struct {
	Path  string `json:"path"`
	Flags uint32 `json:"flags"`
	Pos   int64  `json:"pos"`
}

func (e *example) Name() string { return "example" }

func (e *example) Claims() sdk.Claims { return sdk.Claims{PathPrefixes: []string{e.prefix}} }

func (e *example) record(hook string, f sdk.File, start time.Time) {
	if e.log == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	fmt.Fprintf(e.log, "%s %d %d %s %d %d\n", hook, f.Pid, f.Fd, f.Path, start.UnixNano(), time.Now().UnixNano())
}

// misbehave crashes, hangs or fails in the hook the environment names (the tests of the
// ordering contract's rule 4); GOCR_EXAMPLE_FAIL makes the hook return an error.
func misbehave(hook string) error {
	if os.Getenv("GOCR_EXAMPLE_CRASH") == hook {
		panic("gocr-plugin-example: crashing in " + hook)
	}
	if os.Getenv("GOCR_EXAMPLE_HANG") == hook {
		select {}
	}
	if os.Getenv("GOCR_EXAMPLE_FAIL") == hook {
		return fmt.Errorf("gocr-plugin-example: failing in %s, as asked", hook)
	}
	return nil
}

// The device hooks do nothing but misbehave when asked.
func (e *example) PauseDevices(ctx context.Context, pids []int) error { return misbehave("pause") }
func (e *example) CheckpointDevices(ctx context.Context, pids []int) error {
	return misbehave("checkpoint")
}
func (e *example) DumpDevicesLate(ctx context.Context, pids []int) error {
	return misbehave("dump-late")
}
func (e *example) RestoreInit(ctx context.Context, pids []int) error {
	return misbehave("restore-init")
}
func (e *example) ResumeDevicesLate(ctx context.Context, pids []int) error {
	return misbehave("resume")
}

func (e *example) DumpFile(ctx context.Context, f sdk.File) ([]byte, error) {
	start := time.Now()
	if err := misbehave("dump"); err != nil {
		return nil, err
	}
	defer e.record("dump", f, start)
	return json.Marshal(saved{Path: f.Path, Flags: f.Flags, Pos: f.Pos})
}

func (e *example) RestoreFile(ctx context.Context, f sdk.File, blob []byte) (*os.File, error) {
	start := time.Now()
	if err := misbehave("restore"); err != nil {
		return nil, err
	}
	defer e.record("restore", f, start)
	var s saved
	if err := json.Unmarshal(blob, &s); err != nil {
		return nil, fmt.Errorf("bad blob for fd %d of pid %d: %w", f.Fd, f.Pid, err)
	}
	if ms, err := strconv.Atoi(os.Getenv("GOCR_EXAMPLE_DELAY")); err == nil {
		time.Sleep(time.Duration(ms) * time.Millisecond)
	}
	if strings.HasSuffix(s.Path, ".wait") {
		select {
		case <-e.signal:
		case <-time.After(10 * time.Second):
			return nil, fmt.Errorf("%s: no .signal file was restored by another process", s.Path)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	const dropped = os.O_CREATE | os.O_EXCL | os.O_TRUNC
	file, err := os.OpenFile(s.Path, int(s.Flags)&^dropped, 0)
	if err != nil {
		return nil, err
	}
	if _, err := file.Seek(s.Pos, 0); err != nil {
		file.Close()
		return nil, err
	}
	if strings.HasSuffix(s.Path, ".signal") {
		e.once.Do(func() { close(e.signal) })
	}
	return file, nil
}

func main() {
	e := &example{prefix: os.Getenv("GOCR_EXAMPLE_PREFIX"), signal: make(chan struct{})}
	if e.prefix == "" {
		e.prefix = "/tmp/gocr-example/"
	}
	if p := os.Getenv("GOCR_EXAMPLE_LOG"); p != "" {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		e.log = f
	}
	if v, err := strconv.Atoi(os.Getenv("GOCR_EXAMPLE_API")); err == nil {
		sdk.Serve(&versioned{e, uint32(v)})
	}
	sdk.Serve(e)
}

// versioned makes the example claim another API version.
type versioned struct {
	*example
	v uint32
}

func (v *versioned) APIVersion() uint32 { return v.v }
