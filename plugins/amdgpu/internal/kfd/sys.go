package kfd

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The syscalls the plugin runs inside a process (Host.Syscall), and their flags.
const (
	SysOpenat = unix.SYS_OPENAT
	SysClose  = unix.SYS_CLOSE
	SysIoctl  = unix.SYS_IOCTL
	SysMmap   = unix.SYS_MMAP
	SysMunmap = unix.SYS_MUNMAP

	ORdwr      = unix.O_RDWR
	OCloexec   = unix.O_CLOEXEC
	ProtRead   = unix.PROT_READ
	ProtWrite  = unix.PROT_WRITE
	MapShared  = unix.MAP_SHARED
	MapPrivate = unix.MAP_PRIVATE
	MapAnon    = unix.MAP_ANONYMOUS
	MapFixed   = unix.MAP_FIXED

	// ENODEV is PROCESS_INFO's answer for a process that uses no GPU; ESRCH RESUME's for a
	// pid without a KFD process.
	ENODEV = unix.ENODEV
	ESRCH  = unix.ESRCH
)

// Ioctl runs ioctl(fd, request, &arg) in this process.
func Ioctl(fd int, request uint32, arg []byte) error {
	var p unsafe.Pointer
	if len(arg) > 0 {
		p = unsafe.Pointer(&arg[0])
	}
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(request), uintptr(p))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return os.NewSyscallError("ioctl", e)
		}
		return nil
	}
}

// Map maps n bytes of f at offset off, shared (a BO through its render node or dmabuf).
func Map(f *os.File, off uint64, n int, write bool) ([]byte, error) {
	prot := unix.PROT_READ
	if write {
		prot |= unix.PROT_WRITE
	}
	// Populated up front: one fault per page would cost more than the copy.
	b, err := unix.Mmap(int(f.Fd()), int64(off), n, prot, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, os.NewSyscallError("mmap", err)
	}
	return b, nil
}

// Unmap undoes Map.
func Unmap(b []byte) error { return unix.Munmap(b) }

// Dup duplicates fd, close-on-exec.
func Dup(fd int) (int, error) {
	n, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("fcntl", err)
	}
	return n, nil
}

// Reserve allocates n bytes of f's blocks up front (a hint: ext4 writes into reserved blocks
// several times faster than it allocates as it goes).
func Reserve(f *os.File, n int64) {
	if n > 0 {
		unix.Fallocate(int(f.Fd()), 0, 0, n)
	}
}
