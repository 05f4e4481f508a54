package amdgpu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gocr/gocr/plugins/amdgpu/internal/kfd"
	"github.com/gocr/gocr/sdk"
)

// The device paths the plugin claims and opens.
const (
	KFDPath      = "/dev/kfd"
	renderPrefix = "/dev/dri/renderD"
)

// imageVersion is the version of the plugin's own records in the image.
const imageVersion = 1

// copyWindow bounds the BO memory mapped at once while it is copied to or from the image.
const copyWindow = 64 << 20

// Plugin checkpoints and restores the KFD state of a tree's processes.
type Plugin struct {
	host     sdk.Host
	topology string // the KFD topology directory

	mu    sync.Mutex
	dumps map[int]*procDump // by pid, from CheckpointDevices
	// Restore: the GPUs of the image, the id here of each, and each process's progress.
	imageGPUs []GPU
	localGPUs []GPU
	toLocal   map[uint32]uint32
	restores  map[int]*procRestore
}

// New returns the plugin, reading the topology from $GOCR_AMDGPU_TOPOLOGY or the kernel's.
func New() *Plugin {
	top := os.Getenv("GOCR_AMDGPU_TOPOLOGY")
	if top == "" {
		top = DefaultTopology
	}
	return &Plugin{topology: top, dumps: map[int]*procDump{}, restores: map[int]*procRestore{}}
}

// kfdImage is what the image holds of one process's KFD state (the blob of its first kfd fd).
type kfdImage struct {
	Version  int                `json:"version"`
	KFDMinor uint32             `json:"kfd_minor"`
	NsPid    uint32             `json:"ns_pid"` // as PROCESS_INFO gave it
	Devices  []kfd.DeviceBucket `json:"devices"`
	BOs      []boImage          `json:"bos"`
	Objects  uint32             `json:"num_objects"`
	Priv     []byte             `json:"priv_data"`
	Contents string             `json:"contents"` // the blob with the VRAM and GTT BOs' bytes
}

type boImage struct {
	Addr   uint64 `json:"addr"`
	Size   uint64 `json:"size"`
	Offset uint64 `json:"offset"`
	GpuID  uint32 `json:"gpu_id"` // the user id
	Flags  uint32 `json:"alloc_flags"`
	At     uint64 `json:"at"` // where its bytes are in Contents
}

// fileImage is the blob of every other claimed fd: a render node, or a kfd fd after the
// first.
type fileImage struct {
	Kind  string `json:"kind"` // "kfd", "render"
	GpuID uint32 `json:"gpu_id,omitempty"`
	Minor uint32 `json:"minor,omitempty"`
}

// vmaImage is the blob of a mapping of /dev/kfd or a render node.
type vmaImage struct {
	Kind  string `json:"kind"`
	GpuID uint32 `json:"gpu_id,omitempty"` // the actual id at the dump, for a render node
	Pgoff uint64 `json:"pgoff"`
}

type procDump struct {
	pid    int
	kfdFd  int
	paused bool
	img    kfdImage
	// first is set once the first kfd fd's DumpFile took img.
	first bool
}

func (p *Plugin) Name() string { return "amdgpu" }

// Claims: the kfd device and the render nodes, as files and as mappings.
func (p *Plugin) Claims() sdk.Claims {
	return sdk.Claims{PathPrefixes: []string{KFDPath, renderPrefix}, MappingPrefixes: []string{KFDPath, renderPrefix}}
}

func (p *Plugin) UseHost(h sdk.Host) { p.host = h }

func isKFD(path string) bool { return path == KFDPath || path == "/"+KFDPath }

func renderMinor(path string) (uint32, bool) {
	path = strings.TrimPrefix(path, "/") // "//dev/dri/..." as some tools print it
	s, ok := strings.CutPrefix("/"+path, renderPrefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}

// fdsOf lists the process's fds whose link is path.
func fdsOf(pid int, match func(link string) bool) ([]int, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || !match(link) {
			continue
		}
		if fd, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, fd)
		}
	}
	sort.Ints(out)
	return out, nil
}

// version asks this machine's KFD its ioctl API version, on the plugin's own fd, and refuses
// one without the CRIU ops the plugin needs.
func version() (uint32, error) {
	f, err := os.OpenFile(KFDPath, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("no usable %s here (%w): is the amdgpu driver loaded, and the device given to the container?", KFDPath, err)
	}
	defer f.Close()
	var v kfd.GetVersionArgs
	if err := kfd.Ioctl(int(f.Fd()), kfd.IocGetVersion, kfd.Bytes(&v)); err != nil {
		return 0, fmt.Errorf("%s: GET_VERSION: %w", KFDPath, err)
	}
	if v.Major != kfd.MajorVersion || v.Minor < kfd.MinMinorVersion {
		return 0, fmt.Errorf("%s speaks KFD ioctl API %d.%d; the amdgpu plugin needs %d.%d or later (a newer kernel or amdgpu driver)", KFDPath, v.Major, v.Minor, kfd.MajorVersion, kfd.MinMinorVersion)
	}
	return v.Minor, nil
}

// CheckpointDevices pauses the queues of every process of the tree that has /dev/kfd open and
// takes its KFD state, BO contents included, before the core reads any memory. The ops run
// from gocr's tracer thread: the kernel takes them only from the ptrace parent.
func (p *Plugin) CheckpointDevices(ctx context.Context, pids []int) error {
	var users []int
	kfdFds := map[int]int{}
	for _, pid := range pids {
		fds, err := fdsOf(pid, isKFD)
		if err != nil {
			return fmt.Errorf("pid %d: list fds: %w", pid, err)
		}
		if len(fds) > 0 {
			users = append(users, pid)
			kfdFds[pid] = fds[0]
		}
	}
	if len(users) == 0 {
		return nil
	}
	minor, err := version()
	if err != nil {
		return fmt.Errorf("%w: %w", err, sdk.ErrUnsupported)
	}
	gpus, err := ReadTopology(p.topology)
	if err != nil {
		return err
	}
	topo, err := json.Marshal(gpus)
	if err != nil {
		return err
	}
	if err := p.host.PutBlob(ctx, "topology", topo); err != nil {
		return err
	}
	for _, pid := range users {
		d := &procDump{pid: pid, kfdFd: kfdFds[pid]}
		p.mu.Lock()
		p.dumps[pid] = d
		p.mu.Unlock()
		if err := p.checkpoint(ctx, d, minor, gpus); err != nil {
			return fmt.Errorf("pid %d: %w", pid, err)
		}
	}
	return nil
}

func (p *Plugin) criuOp(ctx context.Context, pid, fd int, a *kfd.CriuArgs, bufs ...*sdk.IoctlBuffer) error {
	_, out, err := p.host.TracerIoctl(ctx, pid, fd, uint64(kfd.IocCriuOp), kfd.Bytes(a), bufs...)
	if err != nil {
		return fmt.Errorf("KFD %s: %w", kfd.OpName(a.Op), err)
	}
	r, err := kfd.Decode[kfd.CriuArgs](out)
	if err != nil {
		return err
	}
	*a = r
	return nil
}

func (p *Plugin) checkpoint(ctx context.Context, d *procDump, minor uint32, gpus []GPU) error {
	info := kfd.CriuArgs{Op: kfd.OpProcessInfo}
	if err := p.criuOp(ctx, d.pid, d.kfdFd, &info); err != nil {
		if errors.Is(err, kfd.ENODEV) {
			return fmt.Errorf("%s is open (fd %d) but no GPU is in use (PROCESS_INFO: %w): such a process is not checkpointed: %w", KFDPath, d.kfdFd, err, sdk.ErrUnsupported)
		}
		return err
	}
	d.paused = true
	if info.NumBOs > 1<<20 || info.NumDevices > 64 || info.PrivDataSize > 64<<20 {
		return fmt.Errorf("KFD PROCESS_INFO: %d devices, %d BOs, %d bytes of private data: more than the plugin takes", info.NumDevices, info.NumBOs, info.PrivDataSize)
	}
	devs := &sdk.IoctlBuffer{At: kfd.CriuDevicesAt, Data: make([]byte, int(info.NumDevices)*16)}
	bos := &sdk.IoctlBuffer{At: kfd.CriuBOsAt, Data: make([]byte, int(info.NumBOs)*48)}
	priv := &sdk.IoctlBuffer{At: kfd.CriuPrivDataAt, Data: make([]byte, info.PrivDataSize)}
	ck := info
	ck.Op = kfd.OpCheckpoint
	if err := p.criuOp(ctx, d.pid, d.kfdFd, &ck, devs, bos, priv); err != nil {
		return err
	}
	devices, err := kfd.DecodeSlice[kfd.DeviceBucket](devs.Data, int(info.NumDevices))
	if err != nil {
		return err
	}
	buckets, err := kfd.DecodeSlice[kfd.BOBucket](bos.Data, int(info.NumBOs))
	if err != nil {
		return err
	}
	d.img = kfdImage{Version: imageVersion, KFDMinor: minor, NsPid: info.Pid, Devices: devices, Objects: info.NumObjects, Priv: priv.Data,
		Contents: fmt.Sprintf("bo-%d", d.pid)}
	actual := map[uint32]uint32{} // user id: actual id
	for _, dv := range devices {
		actual[dv.UserGpuID] = dv.ActualGpuID
	}
	minorOf := map[uint32]uint32{}
	for _, g := range gpus {
		minorOf[g.ID] = g.Minor
	}
	out, err := p.host.CreateBlobFile(ctx, d.img.Contents)
	if err != nil {
		return err
	}
	defer out.Close()
	var total uint64
	for _, b := range buckets {
		if kfd.HasContent(b.AllocFlags) {
			total += b.Size
		}
	}
	kfd.Reserve(out, int64(total))
	renders := map[uint32]*os.File{}
	defer func() {
		for _, f := range renders {
			f.Close()
		}
	}()
	var at uint64
	for _, b := range buckets {
		bi := boImage{Addr: b.Addr, Size: b.Size, Offset: b.Offset, GpuID: b.GpuID, Flags: b.AllocFlags, At: at}
		d.img.BOs = append(d.img.BOs, bi)
		if !kfd.HasContent(b.AllocFlags) {
			continue
		}
		gpu, ok := actual[b.GpuID]
		if !ok {
			return fmt.Errorf("BO at %#x is on GPU %#x, which is none of the process's", b.Addr, b.GpuID)
		}
		f, err := p.renderOf(ctx, d.pid, minorOf[gpu], renders)
		if err != nil {
			return fmt.Errorf("BO at %#x on GPU %#x: %w", b.Addr, gpu, err)
		}
		if err := copyOut(out, f, b.Offset, b.Size); err != nil {
			return fmt.Errorf("save BO at %#x (%d bytes) on GPU %#x: %w", b.Addr, b.Size, gpu, err)
		}
		at += b.Size
	}
	return nil
}

// renderOf returns a dup of the process's fd on renderD<minor>, through which the plugin maps
// its BOs (the BOs' mmap offsets are the render file's).
func (p *Plugin) renderOf(ctx context.Context, pid int, minor uint32, cache map[uint32]*os.File) (*os.File, error) {
	if f := cache[minor]; f != nil {
		return f, nil
	}
	path := fmt.Sprintf("%s%d", renderPrefix, minor)
	fds, err := fdsOf(pid, func(l string) bool { return l == path })
	if err != nil {
		return nil, err
	}
	if len(fds) == 0 {
		return nil, fmt.Errorf("the process has no fd on %s to reach its memory through", path)
	}
	f, err := p.host.GetFd(ctx, pid, fds[0])
	if err != nil {
		return nil, err
	}
	cache[minor] = f
	return f, nil
}

// copyOut appends size bytes of f at off to out, a bounded window at a time: BO memory is
// device memory, possibly more than this machine's RAM.
func copyOut(out io.Writer, f *os.File, off, size uint64) error {
	for done := uint64(0); done < size; {
		n := min(size-done, copyWindow)
		m, err := kfd.Map(f, off+done, int(n), false)
		if err != nil {
			return err
		}
		_, err = out.Write(m)
		kfd.Unmap(m)
		if err != nil {
			return err
		}
		done += n
	}
	return nil
}

// copyIn fills size bytes of f at off from in at at.
func copyIn(f *os.File, off, size uint64, in io.ReaderAt, at uint64) error {
	for done := uint64(0); done < size; {
		n := min(size-done, copyWindow)
		m, err := kfd.Map(f, off+done, int(n), true)
		if err != nil {
			return err
		}
		_, err = in.ReadAt(m, int64(at+done))
		kfd.Unmap(m)
		if err != nil {
			return err
		}
		done += n
	}
	return nil
}

// DumpFile records a kfd or render fd; the first kfd fd of a process carries its KFD state.
func (p *Plugin) DumpFile(ctx context.Context, f sdk.File) ([]byte, error) {
	if isKFD(f.Path) {
		p.mu.Lock()
		d := p.dumps[f.Pid]
		first := d != nil && !d.first
		if first {
			d.first = true
		}
		p.mu.Unlock()
		if d == nil {
			return nil, fmt.Errorf("pid %d fd %d: %s was not checkpointed (opened after the tree was frozen?)", f.Pid, f.Fd, KFDPath)
		}
		if first {
			return json.Marshal(d.img)
		}
		return json.Marshal(fileImage{Kind: "kfd"})
	}
	minor, ok := renderMinor(f.Path)
	if !ok {
		return nil, fmt.Errorf("pid %d fd %d: %s is neither %s nor a render node", f.Pid, f.Fd, f.Path, KFDPath)
	}
	gpus, err := ReadTopology(p.topology)
	if err != nil {
		return nil, err
	}
	for _, g := range gpus {
		if g.Minor == minor {
			return json.Marshal(fileImage{Kind: "render", GpuID: g.ID, Minor: minor})
		}
	}
	return nil, fmt.Errorf("pid %d fd %d: %s is no GPU of the KFD topology (%s)", f.Pid, f.Fd, f.Path, p.topology)
}

// DumpVMA records a mapping of /dev/kfd or of a render node: only where it is and what it
// maps; the memory is the BO's, saved with the KFD state.
func (p *Plugin) DumpVMA(ctx context.Context, v sdk.VMA) ([]byte, error) {
	p.mu.Lock()
	d := p.dumps[v.Pid]
	p.mu.Unlock()
	if d == nil {
		return nil, fmt.Errorf("mapping %#x-%#x of %s: the process has no KFD state", v.Start, v.End, v.Path)
	}
	if isKFD(v.Path) {
		return json.Marshal(vmaImage{Kind: "kfd", Pgoff: v.Pgoff})
	}
	minor, ok := renderMinor(v.Path)
	if !ok {
		return nil, fmt.Errorf("mapping %#x-%#x of %s: not a GPU device", v.Start, v.End, v.Path)
	}
	gpus, err := ReadTopology(p.topology)
	if err != nil {
		return nil, err
	}
	var gpu uint32
	for _, g := range gpus {
		if g.Minor == minor {
			gpu = g.ID
		}
	}
	user := map[uint32]uint32{}
	for _, dv := range d.img.Devices {
		user[dv.ActualGpuID] = dv.UserGpuID
	}
	for _, b := range d.img.BOs {
		if b.GpuID == user[gpu] && v.Pgoff >= b.Offset && v.Pgoff+(v.End-v.Start) <= b.Offset+b.Size {
			return json.Marshal(vmaImage{Kind: "render", GpuID: gpu, Pgoff: v.Pgoff})
		}
	}
	return nil, fmt.Errorf("mapping %#x-%#x of %s at offset %#x is no KFD BO of pid %d (a DRM-only buffer?): %w", v.Start, v.End, v.Path, v.Pgoff, v.Pid, sdk.ErrUnsupported)
}

// DumpDevicesLate lets the queues go again once the tree's memory is read.
func (p *Plugin) DumpDevicesLate(ctx context.Context, pids []int) error {
	return p.unpauseAll(ctx)
}

func (p *Plugin) unpauseAll(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, d := range p.dumps {
		if !d.paused {
			continue
		}
		a := kfd.CriuArgs{Op: kfd.OpUnpause}
		if err := p.criuOp(ctx, d.pid, d.kfdFd, &a); err != nil {
			errs = append(errs, fmt.Errorf("pid %d: %w", d.pid, err))
			continue
		}
		d.paused = false
	}
	return errors.Join(errs...)
}

// Fini: a failed dump never leaves a GPU job paused.
func (p *Plugin) Fini(ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.unpauseAll(ctx)
}
