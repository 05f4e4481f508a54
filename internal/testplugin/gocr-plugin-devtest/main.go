// Command gocr-plugin-devtest is a test plugin that handles a mapping the way a device plugin
// would: through gocr's host services. It claims shared mappings of files under
// GOCR_DEVTEST_PREFIX. At dump it reads the mapping's first bytes (ReadMemory), asks how far
// the process's fd 3 is from the end of its file with FIONREAD run from gocr's tracer thread
// (TracerIoctl), takes a dup of that fd (GetFd) to stat it, and stores the bytes as a blob
// (PutBlob). At restore it maps the file again inside the process with syscalls it runs there
// (Syscall, WriteMemory), and checks the bytes against the blob (GetBlob, ReadMemory). Every
// hook is logged to GOCR_DEVTEST_LOG as "HOOK PIDS DETAIL". A mapping of a file whose name ends
// in ".wait" is restored only once one ending in ".signal" was, for another process.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gocr/gocr/sdk"
)

type devtest struct {
	prefix string
	host   sdk.Host
	mu     sync.Mutex
	log    *os.File
	signal chan struct{}
	once   sync.Once
}

func (d *devtest) Name() string { return "devtest" }

func (d *devtest) Claims() sdk.Claims { return sdk.Claims{MappingPrefixes: []string{d.prefix}} }

func (d *devtest) UseHost(h sdk.Host) { d.host = h }

func (d *devtest) record(hook string, pids []int, detail string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.log, "%s %v %s\n", hook, pids, detail)
}

func (d *devtest) DumpFile(ctx context.Context, f sdk.File) ([]byte, error) {
	return nil, fmt.Errorf("devtest claims no file")
}

func (d *devtest) RestoreFile(ctx context.Context, f sdk.File, blob []byte) (*os.File, error) {
	return nil, fmt.Errorf("devtest claims no file")
}

type saved struct {
	Path  string `json:"path"`
	Pgoff uint64 `json:"pgoff"`
}

func (d *devtest) DumpVMA(ctx context.Context, v sdk.VMA) ([]byte, error) {
	first, err := d.host.ReadMemory(ctx, v.Pid, v.Start, 16)
	if err != nil {
		return nil, err
	}
	arg := make([]byte, 4)
	if _, arg, err = d.host.TracerIoctl(ctx, v.Pid, 3, syscall.TIOCINQ /* FIONREAD */, arg); err != nil {
		return nil, err
	}
	f, err := d.host.GetFd(ctx, v.Pid, 3)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	f.Close()
	if err != nil {
		return nil, err
	}
	if err := d.host.PutBlob(ctx, blobName(v.Path), first); err != nil {
		return nil, err
	}
	d.record("DumpVMA", []int{v.Pid}, fmt.Sprintf("first=%q fionread=%d size=%d", strings.TrimRight(string(first), "\x00"), binary.LittleEndian.Uint32(arg), st.Size()))
	return json.Marshal(saved{Path: v.Path, Pgoff: v.Pgoff})
}

// blobName is a blob name for a mapped file: its name, with what blob names refuse dropped.
func blobName(path string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, path[strings.LastIndexByte(path, '/')+1:])
}

func (d *devtest) RestoreVMA(ctx context.Context, v sdk.VMA, blob []byte) error {
	var s saved
	if err := json.Unmarshal(blob, &s); err != nil {
		return err
	}
	if strings.HasSuffix(s.Path, ".wait") {
		select {
		case <-d.signal:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("%s: no .signal mapping was restored by another process", s.Path)
		}
	}
	defer func() {
		if strings.HasSuffix(s.Path, ".signal") {
			d.once.Do(func() { close(d.signal) })
		}
	}()
	// A page of our own inside the process for the path, then open, map, close, unmap.
	page, err := d.host.Syscall(ctx, v.Pid, syscall.SYS_MMAP, 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		return fmt.Errorf("scratch page: %w", err)
	}
	if err := d.host.WriteMemory(ctx, v.Pid, page, append([]byte(s.Path), 0)); err != nil {
		return err
	}
	atFdcwd := ^uint64(99)
	fd, err := d.host.Syscall(ctx, v.Pid, syscall.SYS_OPENAT, atFdcwd, page, syscall.O_RDWR|syscall.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open %s: %w", s.Path, err)
	}
	flags := uint64(syscall.MAP_PRIVATE)
	if v.Shared {
		flags = syscall.MAP_SHARED
	}
	if _, err := d.host.Syscall(ctx, v.Pid, syscall.SYS_MMAP, v.Start, v.End-v.Start, uint64(v.Prot), flags|syscall.MAP_FIXED, fd, s.Pgoff); err != nil {
		return fmt.Errorf("map %s: %w", s.Path, err)
	}
	d.host.Syscall(ctx, v.Pid, syscall.SYS_CLOSE, fd)
	d.host.Syscall(ctx, v.Pid, syscall.SYS_MUNMAP, page, 4096)
	want, err := d.host.GetBlob(ctx, blobName(v.Path))
	if err != nil {
		return err
	}
	got, err := d.host.ReadMemory(ctx, v.Pid, v.Start, len(want))
	if err != nil {
		return err
	}
	d.record("RestoreVMA", []int{v.Pid}, fmt.Sprintf("same=%v", bytes.Equal(got, want)))
	return nil
}

func (d *devtest) PauseDevices(ctx context.Context, pids []int) error {
	d.record("PauseDevices", pids, "")
	return nil
}

func (d *devtest) CheckpointDevices(ctx context.Context, pids []int) error {
	d.record("CheckpointDevices", pids, "")
	return nil
}

func (d *devtest) DumpDevicesLate(ctx context.Context, pids []int) error {
	d.record("DumpDevicesLate", pids, "")
	return nil
}

func (d *devtest) RestoreInit(ctx context.Context, pids []int) error {
	d.record("RestoreInit", pids, "")
	return nil
}

func (d *devtest) ResumeDevicesLate(ctx context.Context, pids []int) error {
	d.record("ResumeDevicesLate", pids, "")
	return nil
}

func (d *devtest) Check(ctx context.Context, pids []int) ([]string, error) {
	d.record("Check", pids, "")
	if os.Getenv("GOCR_DEVTEST_NO_DEVICE") != "" {
		return []string{"no such device here"}, nil
	}
	return nil, nil
}

func (d *devtest) Fini(ok bool) { d.record("Fini", nil, fmt.Sprint(ok)) }

func main() {
	f, err := os.OpenFile(os.Getenv("GOCR_DEVTEST_LOG"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "devtest: GOCR_DEVTEST_LOG:", err)
		os.Exit(1)
	}
	sdk.Serve(&devtest{prefix: os.Getenv("GOCR_DEVTEST_PREFIX"), log: f, signal: make(chan struct{})})
}
