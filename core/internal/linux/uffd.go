package linux

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// userfaultfd write-protect tracking (linux/userfaultfd.h); see docs/limits.md, and
// shared/reference/memory-tracking.md for what was measured on this kernel.
const (
	SysUserfaultfd = unix.SYS_USERFAULTFD
	// UffdUserModeOnly lets an unprivileged process make a userfaultfd.
	UffdUserModeOnly = 1

	uffdAPIVersion     = 0xaa
	uffdioAPI          = 0xc018aa3f
	uffdioRegister     = 0xc020aa00
	uffdRegisterModeWP = 2
	UffdFeatureWPAsync = 1 << 15
	pmScanWPMatching   = 1
	pmScanCheckWPAsync = 2
	FDupfdCloexec      = unix.F_DUPFD_CLOEXEC
	UffdTrackerFdMin   = 1000
	UffdTrackerFdMax   = 1999
)

// uffdioAPIArg is struct uffdio_api (linux/userfaultfd.h), 24 bytes.
type uffdioAPIArg struct {
	API      uint64
	Features uint64
	Ioctls   uint64
}

// uffdioRegisterArg is struct uffdio_register (linux/userfaultfd.h): struct uffdio_range
// {start, len}, mode, ioctls; 32 bytes.
type uffdioRegisterArg struct {
	Start  uint64
	Len    uint64
	Mode   uint64
	Ioctls uint64
}

// UffdAPI enables features on a new userfaultfd.
func UffdAPI(fd int, features uint64) error {
	arg := uffdioAPIArg{API: uffdAPIVersion, Features: features}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uffdioAPI, uintptr(unsafe.Pointer(&arg)))
	if e != 0 {
		return os.NewSyscallError("ioctl(UFFDIO_API)", e)
	}
	return nil
}

// UffdRegisterWP registers [start, start+n) of the userfaultfd's process for write-protect
// tracking.
func UffdRegisterWP(fd int, start, n uint64) error {
	return uffdRegister(fd, start, n, uffdRegisterModeWP)
}

func uffdRegister(fd int, start, n, mode uint64) error {
	arg := uffdioRegisterArg{Start: start, Len: n, Mode: mode}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uffdioRegister, uintptr(unsafe.Pointer(&arg)))
	if e != 0 {
		return os.NewSyscallError("ioctl(UFFDIO_REGISTER)", e)
	}
	return nil
}

// PagemapResetWritten write-protects [start, end), so that a later scan reports as written
// only what is written from now on. In a sparse mapping only the present pages are
// protected: a protected hole costs a page-table marker, and holes keep reporting
// written-not-present anyway. A dense one takes the kernel's fast path, which protects all.
func PagemapResetWritten(pagemapFd int, start, end uint64, dense bool) error {
	mask := uint64(PageIsWritten | PageIsPresent)
	if dense {
		mask = PageIsWritten
	}
	for start < end {
		arg := pmScanArg{
			Size:         uint64(unsafe.Sizeof(pmScanArg{})),
			Flags:        pmScanWPMatching,
			Start:        start,
			End:          end,
			CategoryMask: mask,
			ReturnMask:   PageIsWritten,
		}
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(pagemapFd), pagemapScan, uintptr(unsafe.Pointer(&arg)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return os.NewSyscallError("ioctl(PAGEMAP_SCAN, WP_MATCHING)", e)
		}
		if arg.WalkEnd <= start {
			break
		}
		start = arg.WalkEnd
	}
	return nil
}

// PagemapTracked says whether all of [start, end) is tracked by a live write-protect
// userfaultfd (a CHECK_WPASYNC scan: EPERM when some of it is not).
func PagemapTracked(pagemapFd int, start, end uint64) (bool, error) {
	arg := pmScanArg{
		Size:         uint64(unsafe.Sizeof(pmScanArg{})),
		Flags:        pmScanCheckWPAsync,
		Start:        start,
		End:          end,
		CategoryMask: PageIsWritten, // the fast path; nothing is returned (no vector)
		ReturnMask:   PageIsWritten,
	}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(pagemapFd), pagemapScan, uintptr(unsafe.Pointer(&arg)))
	switch e {
	case 0:
		return true, nil
	case unix.EPERM:
		return false, nil
	}
	return false, os.NewSyscallError("ioctl(PAGEMAP_SCAN, CHECK_WPASYNC)", e)
}

// Lazy restore: userfaultfd in missing mode, served by gocr (linux/userfaultfd.h).
const (
	uffdioUnregister        = 0x8010aa01
	uffdioWake              = 0x8010aa02
	uffdioCopy              = 0xc028aa03
	uffdioZeropage          = 0xc020aa04
	uffdRegisterModeMissing = 1

	UffdFeatureEventFork   = 1 << 1
	UffdFeatureEventRemap  = 1 << 2
	UffdFeatureEventRemove = 1 << 3
	UffdFeatureEventUnmap  = 1 << 6

	UffdEventPagefault = 0x12
	UffdEventFork      = 0x13
	UffdEventRemap     = 0x14
	UffdEventRemove    = 0x15
	UffdEventUnmap     = 0x16

	// UffdMsgSize is the size of struct uffd_msg.
	UffdMsgSize = 32
)

// UffdMsg is struct uffd_msg: the event and its three words (pagefault: flags, address;
// fork: the new userfaultfd in the low half of A; remap: from, to, len; remove and unmap:
// start, end).
type UffdMsg struct {
	Event   uint8
	A, B, C uint64
}

// ParseUffdMsgs splits what a read of a userfaultfd returned.
func ParseUffdMsgs(b []byte) []UffdMsg {
	var out []UffdMsg
	for ; len(b) >= UffdMsgSize; b = b[UffdMsgSize:] {
		out = append(out, UffdMsg{Event: b[0],
			A: leUint64(b[8:]), B: leUint64(b[16:]), C: leUint64(b[24:])})
	}
	return out
}

func leUint64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// UffdRegisterMissing registers [start, start+n) of the userfaultfd's process: touching a
// page that is not there waits for UffdCopy or UffdZeropage.
func UffdRegisterMissing(fd int, start, n uint64) error {
	return uffdRegister(fd, start, n, uffdRegisterModeMissing)
}

// UffdUnregister unregisters [start, start+n) (a range no longer registered is not an
// error worth reporting: the caller ignores it).
func UffdUnregister(fd int, start, n uint64) error {
	arg := [2]uint64{start, n}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uffdioUnregister, uintptr(unsafe.Pointer(&arg)))
	if e != 0 {
		return e
	}
	return nil
}

// uffdioCopyArg is struct uffdio_copy, 40 bytes.
type uffdioCopyArg struct {
	Dst, Src, Len, Mode uint64
	Copy                int64
}

// UffdCopy copies n bytes from src (gocr's memory) to dst in the userfaultfd's process and
// wakes the threads waiting there. It returns how much was copied: less than n with EAGAIN
// (the address space is changing: read the events first) or EEXIST (a page is there).
func UffdCopy(fd int, dst uintptr, src unsafe.Pointer, n uint64) (uint64, error) {
	arg := uffdioCopyArg{Dst: uint64(dst), Src: uint64(uintptr(src)), Len: n}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uffdioCopy, uintptr(unsafe.Pointer(&arg)))
	done := uint64(0)
	if arg.Copy > 0 {
		done = uint64(arg.Copy)
	}
	if e != 0 {
		return done, e
	}
	return done, nil
}

// UffdZeropage maps zero pages at [dst, dst+n) and wakes the waiters.
func UffdZeropage(fd int, dst, n uint64) error {
	arg := struct {
		Start, Len, Mode uint64
		Zeropage         int64
	}{Start: dst, Len: n}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uffdioZeropage, uintptr(unsafe.Pointer(&arg)))
	if e != 0 {
		return e
	}
	return nil
}

// UffdWake wakes the threads waiting on [start, start+n).
func UffdWake(fd int, start, n uint64) error {
	arg := [2]uint64{start, n}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uffdioWake, uintptr(unsafe.Pointer(&arg)))
	if e != 0 {
		return e
	}
	return nil
}
