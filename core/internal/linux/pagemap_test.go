package linux

import (
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A scan that finds more regions than one call returns, and more than the kernel's bounce
// buffer holds (512), lists each page once, in order.
func TestPagemapScanManyRegions(t *testing.T) {
	const pages = 8192
	m, err := unix.Mmap(-1, 0, pages*PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	unix.Madvise(m, unix.MADV_NOHUGEPAGE)
	for i := 0; i < pages; i += 2 {
		m[i*PageSize] = 1 // every other page: pages/2 regions
	}
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	start := uint64(uintptrOf(m))
	regions, err := PagemapScan(int(pm.Fd()), start, start+pages*PageSize, PageIsPresent, PageIsPresent)
	if err != nil {
		t.Skipf("PAGEMAP_SCAN is not available: %v", err)
	}
	var n, last uint64
	for i, r := range regions {
		if r.Start < last || r.End <= r.Start {
			t.Fatalf("region %d [%#x, %#x) overlaps or goes back (previous ends at %#x)", i, r.Start, r.End, last)
		}
		last = r.End
		n += (r.End - r.Start) / PageSize
	}
	if n != pages/2 {
		t.Fatalf("%d pages reported, want %d", n, pages/2)
	}
}

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }
