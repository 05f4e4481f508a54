package linux

func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
func xgetbv(index uint32) (eax, edx uint32)

// XStateLayout returns what this CPU's XSAVE area looks like to ptrace: its size for the
// features enabled in XCR0 (CPUID leaf 0xD, sub-leaf 0, EBX) and XCR0 itself. A process can
// be given an image's NT_X86_XSTATE only when both match.
func XStateLayout() (size uint32, features uint64) {
	_, _, ecx, _ := cpuid(1, 0)
	if ecx&(1<<27) == 0 { // OSXSAVE
		return 512, 3
	}
	_, ebx, _, _ := cpuid(0xd, 0)
	lo, hi := xgetbv(0)
	return ebx, uint64(hi)<<32 | uint64(lo)
}
