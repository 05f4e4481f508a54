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
	arg := uffdioRegisterArg{Start: start, Len: n, Mode: uffdRegisterModeWP}
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
