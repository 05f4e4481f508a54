package amdgpu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/gocr/gocr/plugins/amdgpu/internal/kfd"
	"github.com/gocr/gocr/sdk"
)

// procRestore is one process's restore: the fds the plugin opened inside it (closed by gocr
// when it installs the process's own fds) and where each BO is now.
type procRestore struct {
	pid      int
	kfdFd    int                 // in the process
	renders  map[uint32]int      // local gpu id: fd in the process
	dups     map[uint32]*os.File // local gpu id: the plugin's dup of it
	kfdDup   *os.File
	restored bool
	bos      []restoredBO
}

type restoredBO struct {
	boImage
	gpu    uint32 // local id
	newOff uint64
}

// loadImageGPUs reads the GPUs the image was dumped on, and this machine's, and matches them.
func (p *Plugin) loadImageGPUs(ctx context.Context) error {
	blob, err := p.host.GetBlob(ctx, "topology")
	if err != nil {
		return fmt.Errorf("the image has no GPU topology: %w", err)
	}
	var img []GPU
	if err := json.Unmarshal(blob, &img); err != nil || len(img) == 0 || len(img) > 64 {
		return fmt.Errorf("the image's GPU topology is damaged")
	}
	here, err := ReadTopology(p.topology)
	if err != nil {
		return err
	}
	m, problems := Match(img, here)
	if len(problems) > 0 {
		return fmt.Errorf("the GPUs here cannot take the job's: %s: %w", strings.Join(problems, "; "), sdk.ErrIncompatible)
	}
	p.imageGPUs, p.localGPUs, p.toLocal = img, here, m
	return nil
}

// Check, in check mode: /dev/kfd is here with a KFD that has the CRIU ops, and the GPUs here
// can take the image's.
func (p *Plugin) Check(ctx context.Context, pids []int) ([]string, error) {
	var problems []string
	if _, err := version(); err != nil {
		problems = append(problems, err.Error())
	}
	blob, err := p.host.GetBlob(ctx, "topology")
	if err != nil {
		return append(problems, "the image has no GPU topology"), nil
	}
	var img []GPU
	if err := json.Unmarshal(blob, &img); err != nil {
		return append(problems, "the image's GPU topology is damaged"), nil
	}
	here, err := ReadTopology(p.topology)
	if err != nil {
		return append(problems, err.Error()), nil
	}
	_, mismatch := Match(img, here)
	return append(problems, mismatch...), nil
}

// RestoreInit refuses, before any process is made, a machine whose KFD or GPUs cannot take the
// image's.
func (p *Plugin) RestoreInit(ctx context.Context, pids []int) error {
	if _, err := version(); err != nil {
		return fmt.Errorf("%w: %w", err, sdk.ErrIncompatible)
	}
	return p.loadImageGPUs(ctx)
}

func (p *Plugin) restoreOf(pid int) *procRestore {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.restores[pid]
	if r == nil {
		r = &procRestore{pid: pid, kfdFd: -1, renders: map[uint32]int{}, dups: map[uint32]*os.File{}}
		p.restores[pid] = r
	}
	return r
}

// call runs a syscall inside the process.
func (p *Plugin) call(ctx context.Context, pid int, what string, nr int64, args ...uint64) (uint64, error) {
	r, err := p.host.Syscall(ctx, pid, nr, args...)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	return r, nil
}

// scratch is memory the plugin maps inside the process for the arguments of its calls.
type scratch struct {
	p    *Plugin
	pid  int
	addr uint64
	size uint64
	used uint64
}

func (p *Plugin) newScratch(ctx context.Context, pid int, size uint64) (*scratch, error) {
	size = (size + 4095) &^ 4095
	addr, err := p.call(ctx, pid, "map scratch memory", kfd.SysMmap, 0, size, kfd.ProtRead|kfd.ProtWrite, kfd.MapPrivate|kfd.MapAnon, ^uint64(0), 0)
	if err != nil {
		return nil, err
	}
	return &scratch{p: p, pid: pid, addr: addr, size: size}, nil
}

// put writes b into the scratch memory and returns its address there.
func (s *scratch) put(ctx context.Context, b []byte) (uint64, error) {
	at := s.addr + s.used
	s.used += (uint64(len(b)) + 15) &^ 15
	if s.used > s.size {
		return 0, fmt.Errorf("scratch memory of %d bytes is too small", s.size)
	}
	return at, s.p.host.WriteMemory(ctx, s.pid, at, b)
}

func (s *scratch) free(ctx context.Context) {
	s.p.host.Syscall(ctx, s.pid, kfd.SysMunmap, s.addr, s.size)
}

// open opens path inside the process (O_RDWR|O_CLOEXEC) and returns the fd there. gocr closes
// every fd the plugin leaves when it installs the process's own.
func (p *Plugin) open(ctx context.Context, s *scratch, path string) (int, error) {
	at, err := s.put(ctx, append([]byte(path), 0))
	if err != nil {
		return -1, err
	}
	fd, err := p.call(ctx, s.pid, "open "+path, kfd.SysOpenat, sdk.AtFdcwd, at, kfd.ORdwr|kfd.OCloexec)
	return int(fd), err
}

// renderFd opens, once, the render node of local GPU gpu inside the process.
func (p *Plugin) renderFd(ctx context.Context, r *procRestore, s *scratch, gpu uint32) (int, error) {
	if fd, ok := r.renders[gpu]; ok {
		return fd, nil
	}
	var minor uint32
	found := false
	for _, g := range p.localGPUs {
		if g.ID == gpu {
			minor, found = g.Minor, true
		}
	}
	if !found {
		return -1, fmt.Errorf("GPU %#x is not here", gpu)
	}
	fd, err := p.open(ctx, s, fmt.Sprintf("%s%d", renderPrefix, minor))
	if err != nil {
		return -1, err
	}
	r.renders[gpu] = fd
	dup, err := p.host.GetFd(ctx, r.pid, fd)
	if err != nil {
		return -1, err
	}
	r.dups[gpu] = dup
	return fd, nil
}

// localOf is the GPU here that takes the place of the image's GPU id.
func (p *Plugin) localOf(actual uint32) (uint32, bool) {
	id, ok := p.toLocal[actual]
	return id, ok
}

// RestoreFile makes a kfd or render fd again. The first kfd fd of a process restores its KFD
// state, from inside the process: KFD's RESTORE binds to the process that calls it.
func (p *Plugin) RestoreFile(ctx context.Context, f sdk.File, blob []byte) (*os.File, error) {
	if p.toLocal == nil {
		return nil, fmt.Errorf("pid %d fd %d: the GPUs were not matched (RestoreInit did not run)", f.Pid, f.Fd)
	}
	r := p.restoreOf(f.Pid)
	var fi fileImage
	if err := json.Unmarshal(blob, &fi); err != nil {
		return nil, fmt.Errorf("pid %d fd %d: damaged record of %s", f.Pid, f.Fd, f.Path)
	}
	s, err := p.newScratch(ctx, f.Pid, 4096)
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", f.Pid, err)
	}
	defer s.free(ctx)
	switch fi.Kind {
	case "render":
		local, ok := p.localOf(fi.GpuID)
		if !ok {
			return nil, fmt.Errorf("pid %d fd %d: GPU %#x of the image has no match here", f.Pid, f.Fd, fi.GpuID)
		}
		if _, err := p.renderFd(ctx, r, s, local); err != nil {
			return nil, fmt.Errorf("pid %d fd %d: %w", f.Pid, f.Fd, err)
		}
		return dupFile(r.dups[local])
	case "kfd":
		if r.kfdDup == nil {
			return nil, fmt.Errorf("pid %d fd %d: a second %s fd before the first", f.Pid, f.Fd, KFDPath)
		}
		return dupFile(r.kfdDup)
	}
	var img kfdImage
	if err := json.Unmarshal(blob, &img); err != nil || img.Version != imageVersion {
		return nil, fmt.Errorf("pid %d fd %d: the KFD record is damaged or of another version", f.Pid, f.Fd)
	}
	if err := p.restoreKFD(ctx, r, &img); err != nil {
		return nil, fmt.Errorf("pid %d: %w", f.Pid, err)
	}
	return dupFile(r.kfdDup)
}

func dupFile(f *os.File) (*os.File, error) {
	fd, err := kfd.Dup(int(f.Fd()))
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// restoreKFD opens /dev/kfd and the render nodes inside the process, runs RESTORE there with
// the image's buckets mapped onto the GPUs here, and writes the BOs' contents back.
func (p *Plugin) restoreKFD(ctx context.Context, r *procRestore, img *kfdImage) error {
	if r.restored {
		return fmt.Errorf("its KFD state is restored twice")
	}
	if len(img.Devices) == 0 || len(img.Devices) > 64 || len(img.BOs) > 1<<20 || len(img.Priv) == 0 {
		return fmt.Errorf("the KFD record is damaged (%d devices, %d BOs, %d bytes of private data)", len(img.Devices), len(img.BOs), len(img.Priv))
	}
	size := uint64(4096 + len(img.Devices)*16 + len(img.BOs)*48 + len(img.Priv))
	s, err := p.newScratch(ctx, r.pid, size)
	if err != nil {
		return err
	}
	defer s.free(ctx)
	r.kfdFd, err = p.open(ctx, s, KFDPath)
	if err != nil {
		return err
	}
	if r.kfdDup, err = p.host.GetFd(ctx, r.pid, r.kfdFd); err != nil {
		return err
	}
	devs := make([]kfd.DeviceBucket, len(img.Devices))
	userToLocal := map[uint32]uint32{}
	for i, d := range img.Devices {
		local, ok := p.localOf(d.ActualGpuID)
		if !ok {
			return fmt.Errorf("GPU %#x of the image has no match here", d.ActualGpuID)
		}
		fd, err := p.renderFd(ctx, r, s, local)
		if err != nil {
			return err
		}
		// The id the process knows stays the one it first had, across migrations.
		devs[i] = kfd.DeviceBucket{UserGpuID: d.UserGpuID, ActualGpuID: local, DrmFd: uint32(fd)}
		userToLocal[d.UserGpuID] = local
	}
	bos := make([]kfd.BOBucket, len(img.BOs))
	for i, b := range img.BOs {
		if _, ok := userToLocal[b.GpuID]; !ok {
			return fmt.Errorf("BO at %#x is on GPU %#x, none of the process's", b.Addr, b.GpuID)
		}
		bos[i] = kfd.BOBucket{Addr: b.Addr, Size: b.Size, Offset: b.Offset, GpuID: b.GpuID, AllocFlags: b.Flags, DmabufFd: kfd.InvalidFd}
	}
	devAt, err := s.put(ctx, kfd.SliceBytes(devs))
	if err != nil {
		return err
	}
	var bosAt uint64
	if len(bos) > 0 {
		if bosAt, err = s.put(ctx, kfd.SliceBytes(bos)); err != nil {
			return err
		}
	}
	privAt, err := s.put(ctx, img.Priv)
	if err != nil {
		return err
	}
	args := kfd.CriuArgs{Devices: devAt, BOs: bosAt, PrivData: privAt, PrivDataSize: uint64(len(img.Priv)),
		NumDevices: uint32(len(devs)), NumBOs: uint32(len(bos)), NumObjects: img.Objects, Op: kfd.OpRestore}
	argsAt, err := s.put(ctx, kfd.Bytes(&args))
	if err != nil {
		return err
	}
	if _, err := p.call(ctx, r.pid, "KFD RESTORE", kfd.SysIoctl, uint64(r.kfdFd), uint64(kfd.IocCriuOp), argsAt); err != nil {
		return err
	}
	r.restored = true
	if len(bos) > 0 {
		raw, err := p.host.ReadMemory(ctx, r.pid, bosAt, len(bos)*48)
		if err != nil {
			return err
		}
		if bos, err = kfd.DecodeSlice[kfd.BOBucket](raw, len(bos)); err != nil {
			return err
		}
	}
	var contents *os.File
	defer func() {
		if contents != nil {
			contents.Close()
		}
	}()
	for i, b := range bos {
		rb := restoredBO{boImage: img.BOs[i], gpu: userToLocal[b.GpuID], newOff: b.RestoredOffset}
		r.bos = append(r.bos, rb)
		if b.DmabufFd != kfd.InvalidFd {
			p.call(ctx, r.pid, "close dmabuf fd", kfd.SysClose, uint64(b.DmabufFd))
		}
		if !kfd.HasContent(b.AllocFlags) {
			continue
		}
		if contents == nil {
			if contents, err = p.host.OpenBlobFile(ctx, img.Contents); err != nil {
				return err
			}
		}
		if err := copyIn(r.dups[rb.gpu], rb.newOff, rb.Size, contents, rb.At); err != nil {
			return fmt.Errorf("write back BO at %#x (%d bytes) on GPU %#x: %w", rb.Addr, rb.Size, rb.gpu, err)
		}
	}
	return nil
}

// RestoreVMA maps a kfd or render mapping again at its address, at the offset its BO has now.
func (p *Plugin) RestoreVMA(ctx context.Context, v sdk.VMA, blob []byte) error {
	var vi vmaImage
	if err := json.Unmarshal(blob, &vi); err != nil {
		return fmt.Errorf("mapping %#x of %s: damaged record", v.Start, v.Path)
	}
	p.mu.Lock()
	r := p.restores[v.Pid]
	p.mu.Unlock()
	if r == nil || !r.restored {
		return fmt.Errorf("mapping %#x of %s: pid %d has no restored KFD state", v.Start, v.Path, v.Pid)
	}
	fd, off := r.kfdFd, v.Pgoff // a kfd page that is no BO (the events page) keeps its offset
	found := false
	var gpu uint32
	if vi.Kind == "render" {
		var ok bool
		if gpu, ok = p.localOf(vi.GpuID); !ok {
			return fmt.Errorf("mapping %#x of %s: GPU %#x has no match here", v.Start, v.Path, vi.GpuID)
		}
		fd = r.renders[gpu]
	}
	for _, b := range r.bos {
		onKFD := b.Flags&(kfd.AllocDoorbell|kfd.AllocMMIORemap) != 0
		if (vi.Kind == "kfd") != onKFD || (vi.Kind == "render" && b.gpu != gpu) || b.Flags&kfd.AllocUserptr != 0 {
			continue
		}
		if vi.Pgoff >= b.Offset && vi.Pgoff < b.Offset+b.Size {
			off, found = b.newOff+(vi.Pgoff-b.Offset), true
			break
		}
	}
	if vi.Kind == "render" && !found {
		return fmt.Errorf("mapping %#x of %s: no BO at offset %#x", v.Start, v.Path, vi.Pgoff)
	}
	got, err := p.call(ctx, v.Pid, fmt.Sprintf("map %s at %#x", v.Path, v.Start), kfd.SysMmap, v.Start, v.End-v.Start, uint64(v.Prot), kfd.MapShared|kfd.MapFixed, uint64(fd), off)
	if err != nil {
		return err
	}
	if got != v.Start {
		return fmt.Errorf("map %s at %#x: the kernel put it at %#x", v.Path, v.Start, got)
	}
	return nil
}

// ResumeDevicesLate resumes every restored process's KFD state once all are in place; RESUME
// is called through the plugin's own /dev/kfd with the pid as this pid namespace sees it.
func (p *Plugin) ResumeDevicesLate(ctx context.Context, pids []int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	var f *os.File
	for _, pid := range pids {
		r := p.restores[pid]
		if r == nil || !r.restored {
			continue
		}
		if f == nil {
			var err error
			if f, err = os.OpenFile(KFDPath, os.O_RDWR, 0); err != nil {
				return fmt.Errorf("open %s to resume: %w", KFDPath, err)
			}
			defer f.Close()
		}
		a := kfd.CriuArgs{Op: kfd.OpResume, Pid: uint32(pid)}
		if err := kfd.Ioctl(int(f.Fd()), kfd.IocCriuOp, kfd.Bytes(&a)); err != nil {
			if errors.Is(err, kfd.ESRCH) {
				err = fmt.Errorf("%w (the kernel knows no KFD process %d)", err, pid)
			}
			errs = append(errs, fmt.Errorf("pid %d: KFD RESUME: %w", pid, err))
		}
	}
	for _, r := range p.restores {
		for _, d := range r.dups {
			d.Close()
		}
		if r.kfdDup != nil {
			r.kfdDup.Close()
		}
		r.dups, r.kfdDup = nil, nil
	}
	return errors.Join(errs...)
}
