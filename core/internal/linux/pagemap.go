package linux

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PAGEMAP_SCAN (linux/fs.h, Linux 6.7+): _IOWR('f', 16, struct pm_scan_arg).
const pagemapScan = 0xc0606610

// Page categories reported by PAGEMAP_SCAN (PAGE_IS_*, linux/fs.h).
const (
	PageIsWPAllowed = 1 << 0
	PageIsWritten   = 1 << 1
	PageIsFile      = 1 << 2
	PageIsPresent   = 1 << 3
	PageIsSwapped   = 1 << 4
	PageIsPFNZero   = 1 << 5
	PageIsHuge      = 1 << 6
)

// pmScanArg is struct pm_scan_arg (linux/fs.h), 96 bytes.
type pmScanArg struct {
	Size              uint64
	Flags             uint64
	Start             uint64
	End               uint64
	WalkEnd           uint64
	Vec               uint64
	VecLen            uint64
	MaxPages          uint64
	CategoryInverted  uint64
	CategoryMask      uint64
	CategoryAnyofMask uint64
	ReturnMask        uint64
}

// PageRegion is struct page_region (linux/fs.h), 24 bytes: [Start, End) with Categories.
type PageRegion struct {
	Start      uint64
	End        uint64
	Categories uint64
}

// PagemapWritten lists the written pages of [start, end): those without the write-protect a
// reset left. Asking for that category alone is the kernel's fast path (no per-page work for
// other categories), some 20 times faster on a large mapping.
func PagemapWritten(pagemapFd int, start, end uint64) ([]PageRegion, error) {
	return scanPagemap(pagemapFd, start, end, 0, PageIsWritten, PageIsWritten)
}

// PagemapWrittenHeld lists the pages of [start, end) written since the write tracking was
// reset that are present or swapped, with the categories in ret: one walk for all of them.
func PagemapWrittenHeld(pagemapFd int, start, end uint64, ret uint64) ([]PageRegion, error) {
	return scanPagemap(pagemapFd, start, end, PageIsPresent|PageIsSwapped, PageIsWritten, ret)
}

// PagemapScan lists the pages of [start, end) that have any of the anyof categories, with
// the categories in ret, through the PAGEMAP_SCAN ioctl on an open /proc/PID/pagemap.
func PagemapScan(pagemapFd int, start, end uint64, anyof, ret uint64) ([]PageRegion, error) {
	return scanPagemap(pagemapFd, start, end, anyof, 0, ret)
}

func scanPagemap(pagemapFd int, start, end uint64, anyof, mask, ret uint64) ([]PageRegion, error) {
	var out []PageRegion
	vec := make([]PageRegion, 1024)
	for start < end {
		arg := pmScanArg{
			Size:              uint64(unsafe.Sizeof(pmScanArg{})),
			Start:             start,
			End:               end,
			Vec:               uint64(uintptr(unsafe.Pointer(&vec[0]))),
			VecLen:            uint64(len(vec)),
			CategoryAnyofMask: anyof,
			CategoryMask:      mask,
			ReturnMask:        ret,
		}
		n, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(pagemapFd), pagemapScan, uintptr(unsafe.Pointer(&arg)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return nil, os.NewSyscallError("ioctl(PAGEMAP_SCAN)", e)
		}
		for _, r := range vec[:n] {
			// After a call that found more regions than the kernel's bounce buffer holds (512),
			// walk_end may come back short of where the walk got: the next call walks part of
			// it again. Drop what was already reported (these scans change nothing, so the
			// second report is the same pages).
			if k := len(out); k > 0 && r.Start < out[k-1].End {
				r.Start = out[k-1].End
				if r.Start >= r.End {
					continue
				}
			}
			// The walk may be resumed after a full vector: merge a region split at the boundary.
			if k := len(out); k > 0 && out[k-1].End == r.Start && out[k-1].Categories == r.Categories {
				out[k-1].End = r.End
				continue
			}
			out = append(out, r)
		}
		if arg.WalkEnd <= start || int(n) < len(vec) && arg.WalkEnd >= end {
			break
		}
		start = arg.WalkEnd
	}
	return out, nil
}
