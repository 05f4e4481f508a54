package kfdemu

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gocr/gocr/plugins/amdgpu/internal/kfd"
)

// gpuState is an emulated GPU and its render node's memory.
type gpuState struct {
	GPU
	file *backing
	used uint64 // VRAM allocated
}

// proc is the KFD process of one tgid: what it bound, allocated and made.
type proc struct {
	tgid  int
	nspid int // its pid in its own pid namespace
	pidfd int
	bound map[uint32][2]uint64 // gpu id: dev and inode of the render file bound
	bos   []*bo
	// Queues and Events are records: the priv blob carries them.
	Queues []queue
	Events []event
	// paused: queues evicted (PROCESS_INFO, RESTORE); restoring: RESTORE done, RESUME not.
	paused, restoring, restored bool
	userIDs                     map[uint32]uint32 // actual gpu id: the id the process knows
	info                        *kfd.CriuArgs     // what PROCESS_INFO said, CHECKPOINT must match
	priv                        []byte
	nextQueue, nextEvent        uint32
}

type bo struct {
	Handle uint64 `json:"handle"`
	gpu    uint32 // actual id
	va     uint64
	size   uint64
	flags  uint32
	offset uint64 // mmap offset in the render or kfd file; the CPU address for USERPTR
	file   *backing
}

type queue struct {
	ID, GpuID, Type uint32
	Ring            uint64
}

type event struct {
	ID, Type uint32
}

func (p *proc) alive() bool {
	if p.pidfd < 0 {
		return false
	}
	fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n == 0
}

func (p *proc) close() {
	for _, b := range p.bos {
		if b.file != nil && b.flags&(kfd.AllocVRAM|kfd.AllocGTT) != 0 {
			b.file.free(b.offset, b.size)
		}
	}
	p.bos = nil
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
}

// procOf returns the live KFD process of tgid, making it; e.mu is held. A dead process's
// state goes (its pid may come back: a restored process).
func (e *Emulator) procOf(tgid int) *proc {
	if p := e.procs[tgid]; p != nil && p.alive() {
		return p
	}
	// The memory of processes that ended goes back (their pids may come back: a restore).
	for pid, p := range e.procs {
		if p.alive() {
			continue
		}
		for _, b := range p.bos {
			if b.flags&kfd.AllocVRAM != 0 {
				e.gpus[b.gpu].used -= b.size
			}
		}
		p.close()
		delete(e.procs, pid)
	}
	fd, err := unix.PidfdOpen(tgid, 0)
	if err != nil {
		fd = -1
	}
	p := &proc{tgid: tgid, nspid: nsPid(tgid), pidfd: fd, bound: map[uint32][2]uint64{}, userIDs: map[uint32]uint32{}}
	e.procs[tgid] = p
	return p
}

// ioctl answers one ioctl on a kfd handle from thread tid; out holds the argument.
func (e *Emulator) ioctl(tid int, h *handle, cmd uint32, arg uint64, out []byte) (int32, syscall.Errno) {
	e.mu.Lock()
	defer e.mu.Unlock()
	caller := tgidOf(tid)
	ev := Event{Op: ioctlName(cmd), CallerTid: tid, Caller: caller, Owner: h.owner, Time: time.Now()}
	r, errno := e.dispatch(tid, caller, h, cmd, out, &ev)
	ev.Errno = errno
	e.log = append(e.log, ev)
	if errno != 0 && cmd == kfd.IocCriuOp {
		// kfd_ioctl copies the argument back even on error: status OK, a negative result.
		return -int32(errno), 0
	}
	return r, errno
}

func (e *Emulator) dispatch(tid, caller int, h *handle, cmd uint32, out []byte, ev *Event) (int32, syscall.Errno) {
	p := e.procs[h.owner]
	if p == nil || !p.alive() {
		return 0, syscall.ESRCH
	}
	// kfd_ioctl: a kfd file is usable by its own process, or by the ptrace parent of its
	// lead thread (the dumper); anyone else gets EBADF.
	if caller != h.owner && tracerOf(h.owner) != tid {
		return 0, syscall.EBADF
	}
	switch cmd {
	case kfd.IocGetVersion:
		return put(out, kfd.GetVersionArgs{Major: kfd.MajorVersion, Minor: e.cfg.MinorVersion})
	case kfd.IocAcquireVM:
		a, errno := get[kfd.AcquireVMArgs](out)
		if errno != 0 {
			return 0, errno
		}
		return 0, e.acquireVM(p, caller, a)
	case kfd.IocGetProcessAperturesNew:
		return e.apertures(tid, out)
	case kfd.IocSetMemoryPolicy:
		a, errno := get[kfd.SetMemoryPolicyArgs](out)
		if errno == 0 && e.gpus[a.GpuID] == nil {
			errno = syscall.EINVAL
		}
		return 0, errno
	case kfd.IocAllocMemoryOfGPU:
		return e.alloc(p, out)
	case kfd.IocFreeMemoryOfGPU:
		a, errno := get[kfd.FreeMemoryOfGPUArgs](out)
		if errno != 0 {
			return 0, errno
		}
		for i, b := range p.bos {
			if b.Handle == a.Handle {
				if b.flags&(kfd.AllocVRAM|kfd.AllocGTT) != 0 {
					b.file.free(b.offset, b.size)
				}
				if b.flags&kfd.AllocVRAM != 0 {
					e.gpus[b.gpu].used -= b.size
				}
				p.bos = append(p.bos[:i], p.bos[i+1:]...)
				return 0, 0
			}
		}
		return 0, syscall.EINVAL
	case kfd.IocMapMemoryToGPU, kfd.IocUnmapMemoryFromGPU:
		return e.mapToGPU(p, tid, out)
	case kfd.IocCreateQueue:
		a, errno := get[kfd.CreateQueueArgs](out)
		if errno != 0 {
			return 0, errno
		}
		if e.gpus[a.GpuID] == nil {
			return 0, syscall.EINVAL
		}
		if _, ok := p.bound[a.GpuID]; !ok {
			return 0, syscall.ENODEV
		}
		p.nextQueue++
		a.QueueID = p.nextQueue
		a.DoorbellOffset = uint64(a.QueueID) * 8
		p.Queues = append(p.Queues, queue{ID: a.QueueID, GpuID: a.GpuID, Type: a.QueueType, Ring: a.RingBaseAddress})
		return put(out, a)
	case kfd.IocDestroyQueue:
		a, errno := get[kfd.DestroyQueueArgs](out)
		if errno != 0 {
			return 0, errno
		}
		for i, q := range p.Queues {
			if q.ID == a.QueueID {
				p.Queues = append(p.Queues[:i], p.Queues[i+1:]...)
				return 0, 0
			}
		}
		return 0, syscall.EINVAL
	case kfd.IocCreateEvent:
		a, errno := get[kfd.CreateEventArgs](out)
		if errno != 0 {
			return 0, errno
		}
		p.nextEvent++
		a.EventID, a.EventSlotIndex = p.nextEvent, p.nextEvent
		p.Events = append(p.Events, event{ID: a.EventID, Type: a.EventType})
		return put(out, a)
	case kfd.IocDestroyEvent:
		return 0, 0
	case kfd.IocCriuOp:
		a, errno := get[kfd.CriuArgs](out)
		if errno != 0 {
			return 0, errno
		}
		ev.Op = kfd.OpName(a.Op)
		if !hasCheckpointCap(caller) {
			return 0, syscall.EACCES
		}
		if errno := e.cfg.Fail[a.Op]; errno != 0 {
			return 0, errno
		}
		errno = e.criu(p, tid, caller, h, &a)
		copy(out, kfd.Bytes(&a))
		return 0, errno
	}
	return 0, syscall.ENOTTY
}

func (e *Emulator) acquireVM(p *proc, caller int, a kfd.AcquireVMArgs) syscall.Errno {
	g := e.gpus[a.GpuID]
	if g == nil {
		return syscall.EINVAL
	}
	if slices.Contains(e.cfg.Denied, g.ID) {
		return syscall.EPERM
	}
	id, errno := e.renderFileOf(caller, int(a.DrmFd), g)
	if errno != 0 {
		return errno
	}
	if old, ok := p.bound[a.GpuID]; ok {
		if old != id {
			return syscall.EBUSY
		}
		return 0
	}
	p.bound[a.GpuID] = id
	return 0
}

// renderFileOf resolves fd in process pid and checks it is g's render node.
func (e *Emulator) renderFileOf(pid, fd int, g *gpuState) ([2]uint64, syscall.Errno) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return [2]uint64{}, syscall.EINVAL
	}
	defer unix.Close(pidfd)
	dup, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return [2]uint64{}, syscall.EINVAL
	}
	defer unix.Close(dup)
	var st, want unix.Stat_t
	e1, e2 := unix.Fstat(dup, &st), unix.Stat(e.Render(g.Minor), &want)
	if e1 != nil || e2 != nil || st.Dev != want.Dev || st.Ino != want.Ino {
		return [2]uint64{}, syscall.EINVAL
	}
	return [2]uint64{st.Dev, st.Ino}, 0
}

// sortedGPUs are the GPUs a process may use, in topology order.
func (e *Emulator) sortedGPUs() []*gpuState {
	out := make([]*gpuState, 0, len(e.cfg.GPUs))
	for _, g := range e.cfg.GPUs {
		if !slices.Contains(e.cfg.Denied, g.ID) {
			out = append(out, e.gpus[g.ID])
		}
	}
	return out
}

func (e *Emulator) apertures(tid int, out []byte) (int32, syscall.Errno) {
	a, errno := get[kfd.GetProcessAperturesNewArgs](out)
	if errno != 0 {
		return 0, errno
	}
	gpus := e.sortedGPUs()
	if a.NumOfNodes == 0 {
		a.NumOfNodes = uint32(len(gpus))
		return put(out, a)
	}
	if a.NumOfNodes < uint32(len(gpus)) {
		return 0, syscall.ENOSPC
	}
	aps := make([]kfd.ProcessDeviceApertures, len(gpus))
	for i, g := range gpus {
		base := uint64(i+1) << 48
		aps[i] = kfd.ProcessDeviceApertures{LdsBase: base, LdsLimit: base + 0xffffffff, ScratchBase: base + 1<<40, ScratchLimit: base + 1<<40 + 0xffffffff,
			GpuvmBase: 1 << 20, GpuvmLimit: 1<<47 - 1, GpuID: g.ID}
	}
	if err := writeTo(tid, a.AperturesPtr, kfd.SliceBytes(aps)); err != nil {
		return 0, syscall.EFAULT
	}
	a.NumOfNodes = uint32(len(gpus))
	return put(out, a)
}

func (e *Emulator) alloc(p *proc, out []byte) (int32, syscall.Errno) {
	a, errno := get[kfd.AllocMemoryOfGPUArgs](out)
	if errno != 0 {
		return 0, errno
	}
	g := e.gpus[a.GpuID]
	if g == nil || a.Size == 0 {
		return 0, syscall.EINVAL
	}
	if _, ok := p.bound[a.GpuID]; !ok {
		return 0, syscall.ENODEV // kfd_bind_process_to_device
	}
	b, errno := e.newBO(p, g, a.VAAddr, a.Size, a.Flags, a.MmapOffset)
	if errno != 0 {
		return 0, errno
	}
	a.Handle, a.MmapOffset = b.Handle, b.offset
	return put(out, a)
}

// newBO makes a BO of p on g: VRAM and GTT in the render node's memory, doorbells and MMIO
// in /dev/kfd's, USERPTR over the process's own memory at cpu.
func (e *Emulator) newBO(p *proc, g *gpuState, va, size uint64, flags uint32, cpu uint64) (*bo, syscall.Errno) {
	b := &bo{Handle: e.nextHand, gpu: g.ID, va: va, size: size, flags: flags}
	switch {
	case flags&kfd.AllocVRAM != 0:
		if g.used+size > g.VRAM {
			return nil, syscall.ENOMEM
		}
		g.used += size
		b.file = g.file
		b.offset = g.file.alloc(size)
	case flags&kfd.AllocGTT != 0:
		b.file = g.file
		b.offset = g.file.alloc(size)
	case flags&(kfd.AllocDoorbell|kfd.AllocMMIORemap) != 0:
		b.file = e.kfdFile
		b.offset = e.kfdFile.alloc(size)
	case flags&kfd.AllocUserptr != 0:
		b.offset = cpu
	default:
		return nil, syscall.EINVAL
	}
	if b.va == 0 {
		b.va = b.offset
	}
	e.nextHand++
	p.bos = append(p.bos, b)
	return b, 0
}

func (e *Emulator) mapToGPU(p *proc, tid int, out []byte) (int32, syscall.Errno) {
	a, errno := get[kfd.MapMemoryToGPUArgs](out)
	if errno != 0 {
		return 0, errno
	}
	found := false
	for _, b := range p.bos {
		found = found || b.Handle == a.Handle
	}
	if !found || a.NDevices == 0 || a.NDevices > 64 {
		return 0, syscall.EINVAL
	}
	ids, err := readFrom(tid, a.DeviceIDsArrayPtr, int(a.NDevices)*4)
	if err != nil {
		return 0, syscall.EFAULT
	}
	for i := a.NSuccess; i < a.NDevices; i++ {
		if _, ok := p.bound[binary.LittleEndian.Uint32(ids[i*4:])]; !ok {
			return 0, syscall.EINVAL
		}
		a.NSuccess = i + 1
	}
	return put(out, a)
}

// privMagic starts the emulator's priv blob; privVersion plays KFD_CRIU_PRIV_VERSION.
const (
	privMagic   = "KFDEMU\x00\x00"
	privVersion = 1
)

// privData is what the priv blob carries: objects the buckets do not (queues, events, the
// BOs' handles and VAs).
type privData struct {
	Queues []queue  `json:"queues"`
	Events []event  `json:"events"`
	BOs    []privBO `json:"bos"`
}

type privBO struct {
	Handle uint64 `json:"handle"`
	VA     uint64 `json:"va"`
}

func (p *proc) privBlob() []byte {
	d := privData{Queues: p.Queues, Events: p.Events}
	for _, b := range p.bos {
		d.BOs = append(d.BOs, privBO{Handle: b.Handle, VA: b.va})
	}
	j, _ := json.Marshal(d)
	out := append([]byte(privMagic), 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(out[len(privMagic):], privVersion)
	return append(out, j...)
}

func (e *Emulator) criu(p *proc, tid, caller int, h *handle, a *kfd.CriuArgs) syscall.Errno {
	switch a.Op {
	case kfd.OpProcessInfo:
		if len(p.bound) == 0 {
			return syscall.ENODEV
		}
		p.paused = true
		p.priv = p.privBlob()
		a.Pid = uint32(p.nspid)
		a.NumDevices = uint32(len(e.sortedGPUs()))
		a.NumBOs = uint32(len(p.bos))
		a.NumObjects = uint32(len(p.Queues) + len(p.Events))
		a.PrivDataSize = uint64(len(p.priv))
		info := *a
		p.info = &info
		return 0
	case kfd.OpCheckpoint:
		if !p.paused || p.info == nil {
			return syscall.EINVAL
		}
		if a.NumDevices != p.info.NumDevices || a.NumBOs != p.info.NumBOs || a.NumObjects != p.info.NumObjects || a.PrivDataSize != p.info.PrivDataSize {
			return syscall.EINVAL
		}
		devs := make([]kfd.DeviceBucket, 0, len(e.cfg.GPUs))
		for _, g := range e.sortedGPUs() {
			user := g.ID
			if u, ok := p.userIDs[g.ID]; ok {
				user = u
			}
			devs = append(devs, kfd.DeviceBucket{UserGpuID: user, ActualGpuID: g.ID, DrmFd: kfd.InvalidFd})
		}
		bos := make([]kfd.BOBucket, 0, len(p.bos))
		for _, b := range p.bos {
			user := b.gpu
			if u, ok := p.userIDs[b.gpu]; ok {
				user = u
			}
			bos = append(bos, kfd.BOBucket{Addr: b.va, Size: b.size, Offset: b.offset, GpuID: user, AllocFlags: b.flags, DmabufFd: kfd.InvalidFd})
		}
		if writeTo(tid, a.Devices, kfd.SliceBytes(devs)) != nil || writeTo(tid, a.BOs, kfd.SliceBytes(bos)) != nil || writeTo(tid, a.PrivData, p.priv) != nil {
			return syscall.EFAULT
		}
		return 0
	case kfd.OpUnpause:
		if !p.paused {
			return syscall.EINVAL
		}
		p.paused, p.info = false, nil
		return 0
	case kfd.OpRestore:
		if caller != h.owner {
			return syscall.EBADF // RESTORE binds to the calling process
		}
		return e.restore(p, tid, caller, a)
	case kfd.OpResume:
		tgid := hostPid(caller, int(a.Pid))
		t := e.procs[tgid]
		if tgid <= 0 || t == nil || !t.alive() || !t.restoring {
			return syscall.ESRCH
		}
		t.restoring, t.paused = false, false
		return 0
	}
	return syscall.EINVAL
}

func (e *Emulator) restore(p *proc, tid, caller int, a *kfd.CriuArgs) syscall.Errno {
	if p.restored || len(p.bos) > 0 || len(p.bound) > 0 {
		return syscall.EINVAL // only a fresh process is restored
	}
	if a.Devices == 0 || a.PrivData == 0 || a.PrivDataSize == 0 || a.NumDevices == 0 || (a.NumBOs > 0 && a.BOs == 0) {
		return syscall.EINVAL
	}
	if int(a.NumDevices) != len(e.sortedGPUs()) || a.NumBOs > 1<<16 || a.PrivDataSize > 16<<20 {
		return syscall.EINVAL
	}
	raw, err := readFrom(tid, a.Devices, int(a.NumDevices)*16)
	if err != nil {
		return syscall.EFAULT
	}
	devs, _ := kfd.DecodeSlice[kfd.DeviceBucket](raw, int(a.NumDevices))
	userToActual := map[uint32]uint32{}
	bound := map[uint32][2]uint64{}
	for _, d := range devs {
		g := e.gpus[d.ActualGpuID]
		if g == nil || slices.Contains(e.cfg.Denied, g.ID) {
			return syscall.EINVAL
		}
		if _, twice := bound[g.ID]; twice {
			return syscall.EINVAL
		}
		id, errno := e.renderFileOf(caller, int(d.DrmFd), g)
		if errno != 0 {
			return errno
		}
		bound[g.ID] = id
		userToActual[d.UserGpuID] = d.ActualGpuID
	}
	priv, err := readFrom(tid, a.PrivData, int(a.PrivDataSize))
	if err != nil {
		return syscall.EFAULT
	}
	if len(priv) < len(privMagic)+4 || string(priv[:len(privMagic)]) != privMagic || binary.LittleEndian.Uint32(priv[len(privMagic):]) != privVersion {
		return syscall.EINVAL
	}
	var d privData
	dec := json.NewDecoder(bytes.NewReader(priv[len(privMagic)+4:]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil || dec.More() || len(d.BOs) != int(a.NumBOs) || len(d.Queues)+len(d.Events) != int(a.NumObjects) {
		return syscall.EINVAL // not consumed exactly
	}
	raw, err = readFrom(tid, a.BOs, int(a.NumBOs)*48)
	if err != nil {
		return syscall.EFAULT
	}
	buckets, _ := kfd.DecodeSlice[kfd.BOBucket](raw, int(a.NumBOs))
	p.bound = bound
	for user, actual := range userToActual {
		p.userIDs[actual] = user
	}
	for i := range buckets {
		bk := &buckets[i]
		actual, ok := userToActual[bk.GpuID]
		if !ok {
			return syscall.EINVAL
		}
		b, errno := e.newBO(p, e.gpus[actual], bk.Addr, bk.Size, bk.AllocFlags, bk.Addr)
		if errno != 0 {
			return errno
		}
		b.va = d.BOs[i].VA
		bk.RestoredOffset = b.offset
		if bk.AllocFlags&kfd.AllocUserptr != 0 {
			bk.RestoredOffset = bk.Addr
		}
		bk.DmabufFd = kfd.InvalidFd
	}
	for _, q := range d.Queues {
		if _, ok := userToActual[q.GpuID]; !ok {
			return syscall.EINVAL
		}
		p.nextQueue = max(p.nextQueue, q.ID)
	}
	for _, ev := range d.Events {
		p.nextEvent = max(p.nextEvent, ev.ID)
	}
	p.Queues, p.Events = d.Queues, d.Events
	if err := writeTo(tid, a.BOs, kfd.SliceBytes(buckets)); err != nil {
		return syscall.EFAULT
	}
	p.restored, p.restoring, p.paused = true, true, true
	return 0
}

func get[T any](b []byte) (T, syscall.Errno) {
	v, err := kfd.Decode[T](b)
	if err != nil {
		return v, syscall.EINVAL
	}
	return v, 0
}

func put[T any](out []byte, v T) (int32, syscall.Errno) {
	copy(out, kfd.Bytes(&v))
	return 0, 0
}

func readFrom(tid int, addr uint64, n int) ([]byte, error) {
	b := make([]byte, n)
	if n == 0 {
		return b, nil
	}
	got, err := unix.ProcessVMReadv(tid, []unix.Iovec{{Base: &b[0], Len: uint64(n)}}, []unix.RemoteIovec{{Base: uintptr(addr), Len: n}}, 0)
	if err != nil {
		return nil, err
	}
	if got != n {
		return nil, fmt.Errorf("short read")
	}
	return b, nil
}

func writeTo(tid int, addr uint64, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if addr == 0 {
		return syscall.EFAULT
	}
	got, err := unix.ProcessVMWritev(tid, []unix.Iovec{{Base: &b[0], Len: uint64(len(b))}}, []unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}, 0)
	if err != nil {
		return err
	}
	if got != len(b) {
		return fmt.Errorf("short write")
	}
	return nil
}

// status reads fields of /proc/TID/status.
func status(tid int, keys ...string) map[string]string {
	out := map[string]string{}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		for _, want := range keys {
			if k == want {
				out[k] = strings.TrimSpace(v)
			}
		}
	}
	return out
}

func tgidOf(tid int) int {
	n, _ := strconv.Atoi(status(tid, "Tgid")["Tgid"])
	return n
}

func tracerOf(tgid int) int {
	n, _ := strconv.Atoi(status(tgid, "TracerPid")["TracerPid"])
	return n
}

// nsPid is the pid of tgid in its own pid namespace (the last NSpid).
func nsPid(tgid int) int {
	f := strings.Fields(status(tgid, "NSpid")["NSpid"])
	if len(f) == 0 {
		return tgid
	}
	n, _ := strconv.Atoi(f[len(f)-1])
	return n
}

// hostPid turns pid as caller's pid namespace sees it into the emulator's (host) pid: the
// caller's own namespace level is found from its NSpid, and the process whose NSpid holds pid
// at that level is the one.
func hostPid(caller, pid int) int {
	level := len(strings.Fields(status(caller, "NSpid")["NSpid"])) - 1
	if level <= 0 {
		return pid
	}
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		tgid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		f := strings.Fields(status(tgid, "NSpid")["NSpid"])
		if len(f) > level && f[level] == strconv.Itoa(pid) {
			return tgid
		}
	}
	return 0
}

// hasCheckpointCap: CRIU ops need CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE (kfd_ioctl's
// KFD_IOC_FLAG_CHECKPOINT_RESTORE).
func hasCheckpointCap(tgid int) bool {
	caps, err := strconv.ParseUint(status(tgid, "CapEff")["CapEff"], 16, 64)
	return err == nil && caps&(1<<unix.CAP_SYS_ADMIN|1<<unix.CAP_CHECKPOINT_RESTORE) != 0
}

func ioctlName(cmd uint32) string {
	switch cmd {
	case kfd.IocGetVersion:
		return "GET_VERSION"
	case kfd.IocAcquireVM:
		return "ACQUIRE_VM"
	case kfd.IocGetProcessAperturesNew:
		return "GET_PROCESS_APERTURES_NEW"
	case kfd.IocSetMemoryPolicy:
		return "SET_MEMORY_POLICY"
	case kfd.IocAllocMemoryOfGPU:
		return "ALLOC_MEMORY_OF_GPU"
	case kfd.IocFreeMemoryOfGPU:
		return "FREE_MEMORY_OF_GPU"
	case kfd.IocMapMemoryToGPU:
		return "MAP_MEMORY_TO_GPU"
	case kfd.IocUnmapMemoryFromGPU:
		return "UNMAP_MEMORY_FROM_GPU"
	case kfd.IocCreateQueue:
		return "CREATE_QUEUE"
	case kfd.IocDestroyQueue:
		return "DESTROY_QUEUE"
	case kfd.IocCreateEvent:
		return "CREATE_EVENT"
	case kfd.IocDestroyEvent:
		return "DESTROY_EVENT"
	case kfd.IocCriuOp:
		return "CRIU_OP"
	}
	return fmt.Sprintf("ioctl %#x", cmd)
}
