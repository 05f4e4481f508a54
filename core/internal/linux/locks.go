package linux

import (
	"encoding/binary"
	"os"

	"golang.org/x/sys/unix"
)

// fcntl commands and lock types for byte-range locks (asm-generic/fcntl.h).
const (
	FGetlk    = unix.F_GETLK
	FSetlk    = unix.F_SETLK
	FOFDGetlk = unix.F_OFD_GETLK
	FOFDSetlk = unix.F_OFD_SETLK
)

// FlockSize is the size of struct flock on x86_64.
const FlockSize = 32

// lockSpan turns a first and last byte (last -1: to the end of the file) into start and length.
func lockSpan(start, end int64) (int64, int64) {
	if end < 0 {
		return start, 0
	}
	return start, end - start + 1
}

func lockType(write bool) int16 {
	if write {
		return unix.F_WRLCK
	}
	return unix.F_RDLCK
}

// FlockBytes is a struct flock for a lock on bytes start..end (end -1: to the end of the
// file), as a process's fcntl reads it.
func FlockBytes(write bool, start, end int64) []byte {
	b := make([]byte, FlockSize)
	s, n := lockSpan(start, end)
	binary.LittleEndian.PutUint16(b[0:], uint16(lockType(write)))
	binary.LittleEndian.PutUint16(b[2:], 0) // SEEK_SET
	binary.LittleEndian.PutUint64(b[8:], uint64(s))
	binary.LittleEndian.PutUint64(b[16:], uint64(n))
	return b
}

// Flock takes a flock(2) lock on fd's open file description without waiting.
func Flock(fd int, write bool) error {
	how := unix.LOCK_SH
	if write {
		how = unix.LOCK_EX
	}
	for {
		err := unix.Flock(fd, how|unix.LOCK_NB)
		if err != unix.EINTR {
			return os.NewSyscallError("flock", err)
		}
	}
}

// SetOFDLock takes an OFD byte-range lock on fd's open file description without waiting.
func SetOFDLock(fd int, write bool, start, end int64) error {
	s, n := lockSpan(start, end)
	lk := unix.Flock_t{Type: lockType(write), Whence: 0, Start: s, Len: n}
	return os.NewSyscallError("fcntl F_OFD_SETLK", unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk))
}

// LockHolder returns the pid of a process holding a lock that conflicts with the one asked
// for (-1 for an OFD lock, whose holder is a file description), or 0 if none does.
func LockHolder(fd int, write bool, start, end int64) (int, error) {
	s, n := lockSpan(start, end)
	lk := unix.Flock_t{Type: lockType(write), Whence: 0, Start: s, Len: n}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk); err != nil {
		return 0, os.NewSyscallError("fcntl F_OFD_GETLK", err)
	}
	if lk.Type == unix.F_UNLCK {
		return 0, nil
	}
	return int(lk.Pid), nil
}
