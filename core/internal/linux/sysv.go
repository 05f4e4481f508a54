package linux

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// ShmInfo is what IPC_STAT tells of a System V shared memory segment.
type ShmInfo struct {
	Key      int32
	Size     uint64
	Mode     uint32 // permissions, and SHM_DEST (01000) once removed
	Uid, Gid uint32
}

// ShmDest is set in ShmInfo.Mode for a segment removed while still attached.
const ShmDest = 0o1000

// ShmStat reads a segment's key, size, mode and owner (IPC_STAT).
func ShmStat(id int) (*ShmInfo, error) {
	var d unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &d); err != nil {
		return nil, os.NewSyscallError("shmctl(IPC_STAT)", err)
	}
	return &ShmInfo{Key: d.Perm.Key, Size: d.Segsz, Mode: d.Perm.Mode, Uid: d.Perm.Uid, Gid: d.Perm.Gid}, nil
}

// ShmCreate makes a segment with the given id (through /proc/sys/kernel/shm_next_id, a
// CONFIG_CHECKPOINT_RESTORE knob), key, size and owner, filled by fill.
func ShmCreate(id int, info *ShmInfo, fill func(mem []byte) error) error {
	if err := os.WriteFile("/proc/sys/kernel/shm_next_id", []byte(strconv.Itoa(id)), 0); err != nil {
		return fmt.Errorf("choose System V shm id %d: %w", id, err)
	}
	got, err := unix.SysvShmGet(int(info.Key), int(info.Size), unix.IPC_CREAT|unix.IPC_EXCL|int(info.Mode&0o777))
	if err != nil {
		return fmt.Errorf("make System V shm %d (key %#x): %w", id, info.Key, err)
	}
	if got != id {
		unix.SysvShmCtl(got, unix.IPC_RMID, nil)
		return fmt.Errorf("make System V shm %d: got id %d", id, got)
	}
	fail := func(err error) error {
		unix.SysvShmCtl(id, unix.IPC_RMID, nil)
		return err
	}
	mem, err := unix.SysvShmAttach(id, 0, 0)
	if err != nil {
		return fail(os.NewSyscallError("shmat", err))
	}
	err = fill(mem)
	unix.SysvShmDetach(mem)
	if err != nil {
		return fail(err)
	}
	var d unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &d); err != nil {
		return fail(os.NewSyscallError("shmctl(IPC_STAT)", err))
	}
	d.Perm.Uid, d.Perm.Gid, d.Perm.Mode = info.Uid, info.Gid, info.Mode&0o777
	if _, err := unix.SysvShmCtl(id, unix.IPC_SET, &d); err != nil {
		return fail(os.NewSyscallError("shmctl(IPC_SET)", err))
	}
	return nil
}

// ShmRemove marks a segment for removal (IPC_RMID): it goes when the last process detaches.
func ShmRemove(id int) error {
	_, err := unix.SysvShmCtl(id, unix.IPC_RMID, nil)
	return os.NewSyscallError("shmctl(IPC_RMID)", err)
}

// SysShmat and ShmRdonly are used to attach a segment inside a process.
const (
	SysShmat  = unix.SYS_SHMAT
	ShmRdonly = unix.SHM_RDONLY
)
