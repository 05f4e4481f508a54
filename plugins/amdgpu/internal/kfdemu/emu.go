// Package kfdemu emulates AMD's /dev/kfd and render nodes for tests, on a machine without an
// AMD GPU: a FUSE file system (go-fuse) serves kfd and renderD<minor> files whose ioctls follow
// the kernel's KFD rules (linux/kfd_ioctl.h; the CRIU ops with their caller checks, as in
// shared/reference/kfd-emulation.md), whose mappings are the BOs' memory (FUSE passthrough to
// one memfd per file, so what a process writes is what the emulator reads), and a fake sysfs
// topology. It can bind its files over /dev/kfd and /dev/dri/renderD* for its lifetime, so
// that unmodified programs open them.
//
// It is a test tool, not a driver: no GPU work runs, dmabuf fds are not made (buckets carry
// KFD_INVALID_FD, as the kernel does for BOs without one), and queues and events are records.
package kfdemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// GPU is one emulated GPU: its id, render minor and sysfs properties.
type GPU struct {
	ID    uint32
	Minor uint32 // renderD<Minor>
	// Props are the node's properties file (simd_count, device_id, fw_version...); Default
	// fills those the topology checks read.
	Props map[string]uint64
	// VRAM is the size of its memory bank, in bytes.
	VRAM uint64
	// Links are the io_links: type 2 is PCIe to the CPU node, 11 XGMI.
	Links []Link
}

// Link is one io_link of a GPU node.
type Link struct {
	Type   uint64
	NodeTo uint64
}

// DefaultGPU is a GPU shaped like an MI210: id and minor as given, 16 GiB of VRAM.
func DefaultGPU(id, minor uint32) GPU {
	return GPU{ID: id, Minor: minor, VRAM: 16 << 30, Links: []Link{{Type: 2, NodeTo: 0}}, Props: map[string]uint64{
		"cpu_cores_count": 0, "simd_count": 416, "mem_banks_count": 1, "caches_count": 186, "io_links_count": 1,
		"max_waves_per_simd": 8, "lds_size_in_kb": 64, "gds_size_in_kb": 0, "num_gws": 64, "wave_front_size": 64,
		"array_count": 8, "simd_arrays_per_engine": 1, "cu_per_simd_array": 13, "simd_per_cu": 4,
		"max_slots_scratch_cu": 32, "vendor_id": 4098, "device_id": 29711, "location_id": 256 * uint64(minor-127),
		"drm_render_minor": uint64(minor), "fw_version": 78, "capability": 746082944, "num_sdma_engines": 2,
		"num_sdma_xgmi_engines": 3, "num_sdma_queues_per_engine": 8, "num_cp_queues": 24, "sdma_fw_version": 8,
		"gfx_target_version": 90010, "unique_id": 0x1234_0000 + uint64(id),
	}}
}

// Config says what to emulate.
type Config struct {
	GPUs []GPU
	// MinorVersion is what GET_VERSION answers after 1. (default: linux/kfd_ioctl.h's 11).
	MinorVersion uint32
	// Dir holds the mount (Dir/dev) and the topology (Dir/topology); a temporary one if "".
	Dir string
	// BindHost binds the files over /dev/kfd and /dev/dri/renderD<minor> until Close.
	BindHost bool
	// Fail makes a CRIU op fail with this errno (a driver error, to test the failure paths).
	Fail map[uint32]syscall.Errno
	// Denied are GPUs the processes may not use, as in a container given only some of the
	// host's GPUs: their render nodes are not bound on the host, ACQUIRE_VM on them gives
	// EPERM, and KFD counts only the others as the process's devices.
	Denied []uint32
}

// Emulator is a running emulation.
type Emulator struct {
	cfg      Config
	dir      string
	ownDir   bool
	server   *fuse.Server
	conn     uint32 // the FUSE connection's number (minor of the mount's device)
	root     *rootNode
	bound    []string // host paths bound over, innermost last
	created  []string // host paths made to bind over, removed at Close
	mu       sync.Mutex
	procs    map[int]*proc // by tgid
	kfdFile  *backing
	gpus     map[uint32]*gpuState
	log      []Event
	nextHand uint64
}

// Event is one ioctl the emulator answered.
type Event struct {
	Op        string // the ioctl, or the CRIU op (PROCESS_INFO...)
	CallerTid int
	Caller    int // tgid
	Owner     int // tgid of the process whose kfd file it was
	Errno     syscall.Errno
	Time      time.Time
}

func (e Event) String() string {
	s := fmt.Sprintf("%s by %d (tid %d) on %d's kfd", e.Op, e.Caller, e.CallerTid, e.Owner)
	if e.Errno != 0 {
		s += ": " + e.Errno.Error()
	}
	return s
}

// Start mounts the emulator (root and /dev/fuse needed) and, with BindHost, binds its files
// over the host's paths. Close undoes everything.
func Start(cfg Config) (*Emulator, error) {
	if cfg.MinorVersion == 0 {
		cfg.MinorVersion = 11
	}
	if len(cfg.GPUs) == 0 {
		return nil, fmt.Errorf("kfdemu: no GPU to emulate")
	}
	e := &Emulator{cfg: cfg, dir: cfg.Dir, procs: map[int]*proc{}, gpus: map[uint32]*gpuState{}, nextHand: 1}
	if e.dir == "" {
		d, err := os.MkdirTemp("", "kfdemu-")
		if err != nil {
			return nil, err
		}
		e.dir, e.ownDir = d, true
	}
	fail := func(err error) (*Emulator, error) {
		e.Close()
		return nil, fmt.Errorf("kfdemu: %w", err)
	}
	var err error
	if e.kfdFile, err = newBacking("kfdemu-kfd"); err != nil {
		return fail(err)
	}
	for _, g := range cfg.GPUs {
		if g.ID == 0 || e.gpus[g.ID] != nil {
			return fail(fmt.Errorf("GPU id %#x: zero or given twice", g.ID))
		}
		b, err := newBacking(fmt.Sprintf("kfdemu-renderD%d", g.Minor))
		if err != nil {
			return fail(err)
		}
		e.gpus[g.ID] = &gpuState{GPU: g, file: b}
	}
	if err := e.writeTopology(); err != nil {
		return fail(err)
	}
	mnt := filepath.Join(e.dir, "dev")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return fail(err)
	}
	e.root = &rootNode{e: e}
	opts := &fs.Options{MountOptions: fuse.MountOptions{DirectMountStrict: true, FsName: "kfdemu", Name: "kfdemu", AllowOther: true}}
	zero := time.Duration(0)
	opts.AttrTimeout, opts.EntryTimeout = &zero, &zero
	if e.server, err = fs.Mount(mnt, e.root, opts); err != nil {
		return fail(fmt.Errorf("mount FUSE at %s: %w", mnt, err))
	}
	closeOnExecFuse()
	if st, err := os.Stat(mnt); err == nil {
		e.conn = unix.Minor(st.Sys().(*syscall.Stat_t).Dev)
	}
	if cfg.BindHost {
		if err := e.bindHost(); err != nil {
			return fail(err)
		}
	}
	return e, nil
}

// KFD is the emulator's own kfd file; Render that of a GPU's render node.
func (e *Emulator) KFD() string { return filepath.Join(e.dir, "dev", "kfd") }
func (e *Emulator) Render(minor uint32) string {
	return filepath.Join(e.dir, "dev", fmt.Sprintf("renderD%d", minor))
}

// Topology is the directory that stands for /sys/class/kfd/kfd/topology.
func (e *Emulator) Topology() string { return filepath.Join(e.dir, "topology") }

// Log is every ioctl answered so far.
func (e *Emulator) Log() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Event(nil), e.log...)
}

// Paused lists the processes whose queues are paused (by PROCESS_INFO or RESTORE) now.
func (e *Emulator) Paused() []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []int
	for tgid, p := range e.procs {
		if p.paused && p.alive() {
			out = append(out, tgid)
		}
	}
	sort.Ints(out)
	return out
}

// BOBytes is how much BO memory live processes hold (VRAM and GTT).
func (e *Emulator) BOBytes() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var n uint64
	for _, p := range e.procs {
		if p.alive() {
			for _, b := range p.bos {
				n += b.size
			}
		}
	}
	return n
}

// Close unbinds the host paths, unmounts and removes what Start made.
func (e *Emulator) Close() error {
	var errs []error
	for i := len(e.bound) - 1; i >= 0; i-- {
		if err := unix.Unmount(e.bound[i], unix.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", e.bound[i], err))
		}
	}
	e.bound = nil
	for i := len(e.created) - 1; i >= 0; i-- {
		os.Remove(e.created[i])
	}
	e.created = nil
	if e.server != nil {
		e.unmount()
		e.server = nil
	}
	e.mu.Lock()
	for _, p := range e.procs {
		p.close()
	}
	e.procs = map[int]*proc{}
	e.mu.Unlock()
	if e.kfdFile != nil {
		e.kfdFile.f.Close()
	}
	for _, g := range e.gpus {
		g.file.f.Close()
	}
	if e.ownDir {
		os.RemoveAll(e.dir)
	}
	return errors.Join(errs...)
}

// unmount unmounts the FUSE file system and waits for its server to end. The server ends
// only when the kernel ends the connection, which it does not while a process still holds
// one of the emulated files: after unmountGrace the connection is aborted (through a fusectl
// mounted for the moment), so that such a process gets ENOTCONN instead of the emulator
// hanging its caller.
func (e *Emulator) unmount() {
	done := make(chan error, 1)
	go func() { done <- e.server.Unmount() }()
	select {
	case err := <-done:
		if err != nil {
			unix.Unmount(filepath.Join(e.dir, "dev"), unix.MNT_DETACH)
		}
		return
	case <-time.After(unmountGrace):
	}
	if err := abortConnection(e.conn); err == nil {
		<-done
	}
}

const unmountGrace = 3 * time.Second

// abortConnection aborts FUSE connection conn through /sys/fs/fuse/connections, mounting a
// fusectl in a directory of its own when none is mounted there, and unmounting it after.
func abortConnection(conn uint32) error {
	dir, err := os.MkdirTemp("", "kfdemu-fusectl-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	if err := unix.Mount("fusectl", dir, "fusectl", 0, ""); err != nil {
		return fmt.Errorf("mount fusectl: %w", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	return os.WriteFile(filepath.Join(dir, strconv.FormatUint(uint64(conn), 10), "abort"), []byte("1"), 0)
}

// closeOnExecFuse marks the FUSE device fds of this process close-on-exec (go-fuse opens
// them without): programs it starts must not hold the emulator's /dev/fuse.
func closeOnExecFuse() {
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, ent := range ents {
		if link, err := os.Readlink("/proc/self/fd/" + ent.Name()); err == nil && link == "/dev/fuse" {
			if fd, err := strconv.Atoi(ent.Name()); err == nil {
				unix.CloseOnExec(fd)
			}
		}
	}
}

// hostPaths are where the emulator's files go on the host, with their sources.
func (e *Emulator) hostPaths() [][2]string {
	out := [][2]string{{e.KFD(), "/dev/kfd"}}
	for _, g := range e.cfg.GPUs {
		if slices.Contains(e.cfg.Denied, g.ID) {
			continue
		}
		out = append(out, [2]string{e.Render(g.Minor), fmt.Sprintf("/dev/dri/renderD%d", g.Minor)})
	}
	return out
}

// bindHost binds the files over the host's paths, making the mount points it needs (regular
// files: there is no real device there). A real device there is never covered.
func (e *Emulator) bindHost() error {
	CleanStale()
	for _, p := range e.hostPaths() {
		src, dst := p[0], p[1]
		if st, err := os.Lstat(dst); err == nil {
			if st.Mode()&os.ModeDevice != 0 {
				return fmt.Errorf("%s is a real device here: the emulator does not cover it", dst)
			}
			return fmt.Errorf("%s exists already (another emulator running?)", dst)
		}
		if dir := filepath.Dir(dst); dir != "/dev" {
			if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
				if err := os.Mkdir(dir, 0o755); err != nil {
					return err
				}
				e.created = append(e.created, dir)
			}
		}
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
		if err != nil {
			return err
		}
		f.Close()
		e.created = append(e.created, dst)
		if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s over %s: %w", src, dst, err)
		}
		e.bound = append(e.bound, dst)
	}
	return nil
}

// CleanStale removes what an emulator killed before its Close left on the host: binds of
// dead FUSE files over /dev/kfd and /dev/dri/renderD*, and the empty files under them.
func CleanStale() {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var stale []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		mp := fields[4]
		sep := 6
		for sep < len(fields) && fields[sep] != "-" {
			sep++
		}
		if sep+1 < len(fields) && fields[sep+1] == "fuse.kfdemu" && (mp == "/dev/kfd" || strings.HasPrefix(mp, "/dev/dri/renderD")) {
			stale = append(stale, mp)
		}
	}
	f.Close()
	for _, mp := range stale {
		unix.Unmount(mp, unix.MNT_DETACH)
	}
	for _, mp := range stale {
		if st, err := os.Lstat(mp); err == nil && st.Mode().IsRegular() && st.Size() == 0 {
			os.Remove(mp)
		}
	}
	if ents, err := os.ReadDir("/dev/dri"); err == nil && len(ents) == 0 && len(stale) > 0 {
		os.Remove("/dev/dri")
	}
}

// writeTopology writes the fake /sys/class/kfd/kfd/topology: node 0 the CPU, then one node
// per GPU with its properties, memory bank and io links.
func (e *Emulator) writeTopology() error {
	top := e.Topology()
	os.RemoveAll(top)
	write := func(path, content string) error {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		return os.WriteFile(path, []byte(content), 0o644)
	}
	props := func(m map[string]uint64) string {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%s %d\n", k, m[k])
		}
		return b.String()
	}
	if err := write(filepath.Join(top, "generation_id"), "1\n"); err != nil {
		return err
	}
	if err := write(filepath.Join(top, "system_properties"), "platform_oem 0\nplatform_id 0\nplatform_rev 0\n"); err != nil {
		return err
	}
	cpu := filepath.Join(top, "nodes", "0")
	if err := write(filepath.Join(cpu, "gpu_id"), "0\n"); err != nil {
		return err
	}
	if err := write(filepath.Join(cpu, "properties"), props(map[string]uint64{"cpu_cores_count": 2, "simd_count": 0, "mem_banks_count": 1, "io_links_count": uint64(len(e.cfg.GPUs))})); err != nil {
		return err
	}
	for i, g := range e.cfg.GPUs {
		node := filepath.Join(top, "nodes", fmt.Sprint(i+1))
		if err := write(filepath.Join(node, "gpu_id"), fmt.Sprintf("%d\n", g.ID)); err != nil {
			return err
		}
		if err := write(filepath.Join(node, "name"), "gfx90a\n"); err != nil {
			return err
		}
		p := map[string]uint64{}
		for k, v := range g.Props {
			p[k] = v
		}
		p["drm_render_minor"] = uint64(g.Minor)
		p["io_links_count"] = uint64(len(g.Links))
		if err := write(filepath.Join(node, "properties"), props(p)); err != nil {
			return err
		}
		if err := write(filepath.Join(node, "mem_banks", "0", "properties"), props(map[string]uint64{"heap_type": 1, "size_in_bytes": g.VRAM, "flags": 0, "width": 4096, "mem_clk_max": 1600})); err != nil {
			return err
		}
		for j, l := range g.Links {
			if err := write(filepath.Join(node, "io_links", fmt.Sprint(j), "properties"), props(map[string]uint64{"type": l.Type, "node_from": uint64(i + 1), "node_to": l.NodeTo, "weight": 20, "flags": 1})); err != nil {
				return err
			}
		}
	}
	return nil
}

// backing is the memfd behind one emulated file: its mappings are this memory.
type backing struct {
	f    *os.File
	next uint64 // the next free mmap offset
}

// The emulated files' size: mmap checks offsets against it, and offsets stay below 2^62
// (MAX_LFS_FILESIZE), where KFD's own mmap-type encoding cannot go.
const fileSize = 1 << 62

func newBacking(name string) (*backing, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("memfd_create", err)
	}
	f := os.NewFile(uintptr(fd), name)
	if err := f.Truncate(fileSize); err != nil {
		f.Close()
		return nil, err
	}
	return &backing{f: f, next: 1 << 32}, nil
}

// alloc reserves size bytes (page-rounded) at a fresh offset; offsets are never reused, so a
// restored BO always lands at another offset than the one it had.
func (b *backing) alloc(size uint64) uint64 {
	off := b.next
	b.next += (size + 0xfff) &^ 0xfff
	b.next += 1 << 20 // a gap, so that an overrun shows
	return off
}

// free gives the memory of a range back.
func (b *backing) free(off, size uint64) {
	unix.Fallocate(int(b.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(off), int64(size))
}

// contextTid is the calling thread of a FUSE request.
func contextTid(ctx context.Context) int {
	if c, ok := fuse.FromContext(ctx); ok {
		return int(c.Pid)
	}
	return 0
}
