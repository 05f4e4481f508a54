// Package kfd is the AMD KFD ioctl ABI (linux/kfd_ioctl.h, uapi 1.x) as Go structs, one per C
// struct with the same layout, and the ioctl numbers: what the amdgpu plugin and the test
// emulator pass to and read from /dev/kfd. Layouts are checked against the C header by a test.
// Nothing here opens a device; callers do.
package kfd

import (
	"fmt"
	"unsafe"
)

// The KFD ioctl API version the plugin needs: 1.8 added SDMA queues over GTT BOs, which ROCm
// uses; 1.7 added the CRIU ioctl.
const (
	MajorVersion    = 1
	MinMinorVersion = 8
)

// InvalidFd is KFD_INVALID_FD: a bucket without a dmabuf fd.
const InvalidFd = 0xffffffff

// ioctl numbers: _IOC(dir, 'K', nr, size).
const (
	iocWrite = 1
	iocRead  = 2
)

func ioc(dir, nr, size uintptr) uint32 { return uint32(dir<<30 | size<<16 | 'K'<<8 | nr) }

// The ioctls (AMDKFD_IOC_*).
var (
	IocGetVersion             = ioc(iocRead, 0x01, unsafe.Sizeof(GetVersionArgs{}))
	IocCreateQueue            = ioc(iocRead|iocWrite, 0x02, unsafe.Sizeof(CreateQueueArgs{}))
	IocDestroyQueue           = ioc(iocRead|iocWrite, 0x03, unsafe.Sizeof(DestroyQueueArgs{}))
	IocSetMemoryPolicy        = ioc(iocWrite, 0x04, unsafe.Sizeof(SetMemoryPolicyArgs{}))
	IocCreateEvent            = ioc(iocRead|iocWrite, 0x08, unsafe.Sizeof(CreateEventArgs{}))
	IocDestroyEvent           = ioc(iocWrite, 0x09, unsafe.Sizeof(DestroyEventArgs{}))
	IocGetProcessAperturesNew = ioc(iocRead|iocWrite, 0x14, unsafe.Sizeof(GetProcessAperturesNewArgs{}))
	IocAcquireVM              = ioc(iocWrite, 0x15, unsafe.Sizeof(AcquireVMArgs{}))
	IocAllocMemoryOfGPU       = ioc(iocRead|iocWrite, 0x16, unsafe.Sizeof(AllocMemoryOfGPUArgs{}))
	IocFreeMemoryOfGPU        = ioc(iocWrite, 0x17, unsafe.Sizeof(FreeMemoryOfGPUArgs{}))
	IocMapMemoryToGPU         = ioc(iocRead|iocWrite, 0x18, unsafe.Sizeof(MapMemoryToGPUArgs{}))
	IocUnmapMemoryFromGPU     = ioc(iocRead|iocWrite, 0x19, unsafe.Sizeof(MapMemoryToGPUArgs{}))
	IocCriuOp                 = ioc(iocRead|iocWrite, 0x22, unsafe.Sizeof(CriuArgs{}))
)

// GetVersionArgs is struct kfd_ioctl_get_version_args.
type GetVersionArgs struct {
	Major, Minor uint32
}

// CreateQueueArgs is struct kfd_ioctl_create_queue_args.
type CreateQueueArgs struct {
	RingBaseAddress       uint64
	WritePointerAddress   uint64
	ReadPointerAddress    uint64
	DoorbellOffset        uint64
	RingSize              uint32
	GpuID                 uint32
	QueueType             uint32
	QueuePercentage       uint32
	QueuePriority         uint32
	QueueID               uint32
	EopBufferAddress      uint64
	EopBufferSize         uint64
	CtxSaveRestoreAddress uint64
	CtxSaveRestoreSize    uint32
	CtlStackSize          uint32
}

// DestroyQueueArgs is struct kfd_ioctl_destroy_queue_args.
type DestroyQueueArgs struct {
	QueueID, Pad uint32
}

// SetMemoryPolicyArgs is struct kfd_ioctl_set_memory_policy_args.
type SetMemoryPolicyArgs struct {
	AlternateApertureBase uint64
	AlternateApertureSize uint64
	GpuID                 uint32
	DefaultPolicy         uint32
	AlternatePolicy       uint32
	Pad                   uint32
}

// CreateEventArgs is struct kfd_ioctl_create_event_args.
type CreateEventArgs struct {
	EventPageOffset  uint64
	EventTriggerData uint32
	EventType        uint32
	AutoReset        uint32
	NodeID           uint32
	EventID          uint32
	EventSlotIndex   uint32
}

// DestroyEventArgs is struct kfd_ioctl_destroy_event_args.
type DestroyEventArgs struct {
	EventID, Pad uint32
}

// ProcessDeviceApertures is struct kfd_process_device_apertures.
type ProcessDeviceApertures struct {
	LdsBase, LdsLimit         uint64
	ScratchBase, ScratchLimit uint64
	GpuvmBase, GpuvmLimit     uint64
	GpuID, Pad                uint32
}

// GetProcessAperturesNewArgs is struct kfd_ioctl_get_process_apertures_new_args.
type GetProcessAperturesNewArgs struct {
	AperturesPtr uint64 // user pointer to NumOfNodes ProcessDeviceApertures
	NumOfNodes   uint32
	Pad          uint32
}

// AcquireVMArgs is struct kfd_ioctl_acquire_vm_args.
type AcquireVMArgs struct {
	DrmFd, GpuID uint32
}

// AllocMemoryOfGPUArgs is struct kfd_ioctl_alloc_memory_of_gpu_args.
type AllocMemoryOfGPUArgs struct {
	VAAddr     uint64
	Size       uint64
	Handle     uint64
	MmapOffset uint64 // in: the CPU address of a USERPTR BO; out: the offset to mmap
	GpuID      uint32
	Flags      uint32
}

// FreeMemoryOfGPUArgs is struct kfd_ioctl_free_memory_of_gpu_args.
type FreeMemoryOfGPUArgs struct {
	Handle uint64
}

// MapMemoryToGPUArgs is struct kfd_ioctl_map_memory_to_gpu_args (and the unmap one, which
// has the same layout).
type MapMemoryToGPUArgs struct {
	Handle            uint64
	DeviceIDsArrayPtr uint64 // user pointer to NDevices u32 gpu ids
	NDevices          uint32
	NSuccess          uint32
}

// CriuArgs is struct kfd_ioctl_criu_args.
type CriuArgs struct {
	Devices      uint64 // user pointer to NumDevices DeviceBuckets
	BOs          uint64 // user pointer to NumBOs BOBuckets
	PrivData     uint64 // user pointer to PrivDataSize bytes
	PrivDataSize uint64
	NumDevices   uint32
	NumBOs       uint32
	NumObjects   uint32
	Pid          uint32
	Op           uint32
	_            uint32
}

// Offsets of CriuArgs' user pointers, where a caller's buffers go.
var (
	CriuDevicesAt  = int(unsafe.Offsetof(CriuArgs{}.Devices))
	CriuBOsAt      = int(unsafe.Offsetof(CriuArgs{}.BOs))
	CriuPrivDataAt = int(unsafe.Offsetof(CriuArgs{}.PrivData))
)

// The CRIU ops (enum kfd_criu_op).
const (
	OpProcessInfo = 0
	OpCheckpoint  = 1
	OpUnpause     = 2
	OpRestore     = 3
	OpResume      = 4
)

// OpName names a CRIU op for messages.
func OpName(op uint32) string {
	switch op {
	case OpProcessInfo:
		return "PROCESS_INFO"
	case OpCheckpoint:
		return "CHECKPOINT"
	case OpUnpause:
		return "UNPAUSE"
	case OpRestore:
		return "RESTORE"
	case OpResume:
		return "RESUME"
	}
	return fmt.Sprintf("op %d", op)
}

// DeviceBucket is struct kfd_criu_device_bucket.
type DeviceBucket struct {
	UserGpuID   uint32
	ActualGpuID uint32
	DrmFd       uint32
	Pad         uint32
}

// BOBucket is struct kfd_criu_bo_bucket.
type BOBucket struct {
	Addr           uint64
	Size           uint64
	Offset         uint64
	RestoredOffset uint64
	GpuID          uint32 // the user gpu id
	AllocFlags     uint32
	DmabufFd       uint32
	Pad            uint32
}

// Allocation flags (KFD_IOC_ALLOC_MEM_FLAGS_*).
const (
	AllocVRAM       = 1 << 0
	AllocGTT        = 1 << 1
	AllocUserptr    = 1 << 2
	AllocDoorbell   = 1 << 3
	AllocMMIORemap  = 1 << 4
	AllocWritable   = 1 << 31
	AllocExecutable = 1 << 30
	AllocPublic     = 1 << 29
)

// HasContent says whether a BO's memory is the device's own (VRAM, GTT): the plugin saves it.
// USERPTR memory is the process's, saved with it; doorbells and MMIO hold no data.
func HasContent(flags uint32) bool { return flags&(AllocVRAM|AllocGTT) != 0 }

// Bytes is v's memory, as the kernel reads it.
func Bytes[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

// Decode reads a T from the start of b, which must be long enough.
func Decode[T any](b []byte) (T, error) {
	var v T
	n := int(unsafe.Sizeof(v))
	if len(b) < n {
		return v, fmt.Errorf("%d bytes for a %d-byte %T", len(b), n, v)
	}
	copy(Bytes(&v), b[:n])
	return v, nil
}

// SliceBytes is the memory of a slice of structs, as the kernel reads an array.
func SliceBytes[T any](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(s[0])))
}

// DecodeSlice reads n structs from b.
func DecodeSlice[T any](b []byte, n int) ([]T, error) {
	var v T
	size := int(unsafe.Sizeof(v))
	if n < 0 || len(b) < n*size {
		return nil, fmt.Errorf("%d bytes for %d %T", len(b), n, v)
	}
	out := make([]T, n)
	copy(SliceBytes(out), b[:n*size])
	return out, nil
}
