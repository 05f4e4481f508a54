package devmap

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/gocr/gocr/sdk"
)

// Plugin maps devices again.
type Plugin struct {
	host    sdk.Host
	mu      sync.Mutex
	devices []saved // every device mapped, stored as the blob "devices" at DumpDevicesLate
}

// saved is what a mapping's blob holds: the device, to check it is the same one at restore.
type saved struct {
	Path string `json:"path"`
	Rdev uint64 `json:"rdev"`
	// Need is how far into the device the mappings reach (for a block device, which must
	// be that large still: a detached loop device is there, and of size 0).
	Need  uint64 `json:"need,omitempty"`
	Block bool   `json:"block,omitempty"`
}

func (p *Plugin) Name() string { return "devmap" }

// Claims: mappings of files under /dev (the core asks only for those it cannot map itself:
// devices; /dev/zero and files under /dev/shm stay the core's).
func (p *Plugin) Claims() sdk.Claims { return sdk.Claims{MappingPrefixes: []string{"/dev/"}} }

func (p *Plugin) UseHost(h sdk.Host) { p.host = h }

func (p *Plugin) DumpFile(ctx context.Context, f sdk.File) ([]byte, error) {
	return nil, fmt.Errorf("the devmap plugin claims no file (fd %d of pid %d)", f.Fd, f.Pid)
}

func (p *Plugin) RestoreFile(ctx context.Context, f sdk.File, blob []byte) (*os.File, error) {
	return nil, fmt.Errorf("the devmap plugin claims no file (fd %d of pid %d)", f.Fd, f.Pid)
}

// DumpVMA records the device of a shared or read-only mapping.
func (p *Plugin) DumpVMA(ctx context.Context, v sdk.VMA) ([]byte, error) {
	if !v.Shared && v.Prot&syscall.PROT_WRITE != 0 {
		return nil, fmt.Errorf("private writable mapping %#x-%#x of %s in pid %d: the pages it changed would be lost: %w", v.Start, v.End, v.Path, v.Pid, sdk.ErrUnsupported)
	}
	rdev, err := deviceOf(v.Path)
	if err != nil {
		return nil, err
	}
	block := isBlock(v.Path)
	need := v.Pgoff + (v.End - v.Start)
	p.mu.Lock()
	i := slices.IndexFunc(p.devices, func(d saved) bool { return d.Path == v.Path && d.Rdev == rdev })
	if i < 0 {
		p.devices = append(p.devices, saved{Path: v.Path, Rdev: rdev, Block: block})
		i = len(p.devices) - 1
	}
	p.devices[i].Need = max(p.devices[i].Need, need)
	p.mu.Unlock()
	return json.Marshal(saved{Path: v.Path, Rdev: rdev, Block: block, Need: need})
}

// DumpDevicesLate stores the devices mapped, for check mode and the restore's first look.
func (p *Plugin) DumpDevicesLate(ctx context.Context, pids []int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.devices) == 0 {
		return nil
	}
	b, err := json.Marshal(p.devices)
	if err != nil {
		return err
	}
	return p.host.PutBlob(ctx, "devices", b)
}

// problems says which of the image's devices are not here, or another device now.
func (p *Plugin) problems(ctx context.Context) []string {
	b, err := p.host.GetBlob(ctx, "devices")
	if err != nil {
		return nil // an image of an older gocr: RestoreVMA still checks each
	}
	var devs []saved
	if err := json.Unmarshal(b, &devs); err != nil {
		return []string{"the image's list of devices is damaged"}
	}
	var out []string
	for _, d := range devs {
		if err := sameDevice(d); err != nil {
			out = append(out, err.Error())
		}
	}
	return out
}

// sameDevice checks that d's path is the device it was.
func sameDevice(d saved) error {
	rdev, err := deviceOf(d.Path)
	if err != nil {
		return fmt.Errorf("device %s is not here (device %#x at the dump)", d.Path, d.Rdev)
	}
	if rdev != d.Rdev {
		return fmt.Errorf("%s is device %#x here, it was %#x at the dump", d.Path, rdev, d.Rdev)
	}
	if d.Block {
		b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/size", (rdev>>8)&0xfff|(rdev>>32)&^0xfff, rdev&0xff|(rdev>>12)&^0xff))
		sectors, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err == nil && perr == nil && sectors*512 < d.Need {
			return fmt.Errorf("device %s is not here: it holds %d bytes, its mappings reach %d (a detached loop device?)", d.Path, sectors*512, d.Need)
		}
	}
	return nil
}

// Check, in check mode: every device mapped is here, the same.
func (p *Plugin) Check(ctx context.Context, pids []int) ([]string, error) {
	return p.problems(ctx), nil
}

// RestoreInit refuses, before any process is made, an image whose devices are gone.
func (p *Plugin) RestoreInit(ctx context.Context, pids []int) error {
	if probs := p.problems(ctx); len(probs) > 0 {
		return fmt.Errorf("%s: %w", strings.Join(probs, "; "), sdk.ErrIncompatible)
	}
	return nil
}

func isBlock(path string) bool {
	var st syscall.Stat_t
	return syscall.Stat(path, &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFBLK
}

func deviceOf(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if t := st.Mode & syscall.S_IFMT; t != syscall.S_IFCHR && t != syscall.S_IFBLK {
		return 0, fmt.Errorf("%s is not a device", path)
	}
	return st.Rdev, nil
}

// RestoreVMA opens the device inside the process and maps it at the old address.
func (p *Plugin) RestoreVMA(ctx context.Context, v sdk.VMA, blob []byte) error {
	var s saved
	if err := json.Unmarshal(blob, &s); err != nil {
		return fmt.Errorf("mapping %#x: %w", v.Start, err)
	}
	if err := sameDevice(s); err != nil {
		return fmt.Errorf("%w: %w", err, sdk.ErrIncompatible)
	}
	call := func(what string, nr int64, args ...uint64) (uint64, error) {
		r, err := p.host.Syscall(ctx, v.Pid, nr, args...)
		if err != nil {
			return 0, fmt.Errorf("pid %d: %s: %w", v.Pid, what, err)
		}
		return r, nil
	}
	page, err := call("scratch page", syscall.SYS_MMAP, 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		return err
	}
	defer p.host.Syscall(ctx, v.Pid, syscall.SYS_MUNMAP, page, 4096)
	if len(s.Path) >= 4096 {
		return fmt.Errorf("device path of %d bytes", len(s.Path))
	}
	if err := p.host.WriteMemory(ctx, v.Pid, page, append([]byte(s.Path), 0)); err != nil {
		return err
	}
	mode, flags := uint64(syscall.O_RDONLY), uint64(syscall.MAP_PRIVATE)
	if v.Shared {
		flags = syscall.MAP_SHARED
		if v.Prot&syscall.PROT_WRITE != 0 {
			mode = syscall.O_RDWR
		}
	}
	fd, err := call("open "+s.Path, syscall.SYS_OPENAT, sdk.AtFdcwd, page, mode|syscall.O_CLOEXEC)
	if err != nil {
		return err
	}
	defer p.host.Syscall(ctx, v.Pid, syscall.SYS_CLOSE, fd)
	_, err = call(fmt.Sprintf("map %s at %#x", s.Path, v.Start), syscall.SYS_MMAP, v.Start, v.End-v.Start, uint64(v.Prot), flags|syscall.MAP_FIXED, fd, v.Pgoff)
	return err
}
