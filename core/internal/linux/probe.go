package linux

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Probe is the result of probing one kernel feature.
type Probe struct {
	Name     string
	Required bool
	Cost     string // what is lost without it
	Err      error  // nil when present
	// Ops are the operations that cannot run without it: "dump", "restore", "track".
	Ops []string
}

var errMissing = errors.New("not supported by this kernel")

// Probes tries every kernel feature gocr uses, without side effects.
func Probes() []Probe {
	return []Probe{
		{"ptrace attach (PTRACE_SEIZE)", true, "no dump or restore at all", probePtraceScope(), []string{"dump", "restore", "track"}},
		{"clone3 with set_tid (Linux 5.5)", true, "no restore: processes cannot get their PIDs back", probeClone3SetTid(), []string{"restore"}},
		{"pidfd_open and pidfd_getfd (Linux 5.6)", true, "no dump of fds and no restore of files", probePidfdGetfd(), []string{"dump", "restore", "track"}},
		{"prctl PR_SET_MM_MAP (CONFIG_CHECKPOINT_RESTORE)", true, "no restore: the mm fields and exe link cannot be set", probeSetMMMap(), []string{"restore"}},
		{"kcmp (CONFIG_KCMP)", true, "no dump: shared open files cannot be told apart", probeKcmp(), []string{"dump"}},
		{"PAGEMAP_SCAN ioctl (Linux 6.7)", true, "no dump: pages cannot be listed", probePagemapScan(), []string{"dump", "track"}},
		{"/proc/PID/task/TID/children (CONFIG_PROC_CHILDREN)", true, "no dump of process trees", probeChildren(), []string{"dump", "track"}},
		{"/proc/PID/map_files", true, "no dump of shared memory, no checksums of mapped files", probeMapFiles(), []string{"dump"}},
		{"process_vm_readv and process_vm_writev", true, "no dump of memory", probeVMReadv(), []string{"dump", "restore"}},
		{"sock_diag for unix sockets (CONFIG_UNIX_DIAG)", false, "processes with unix sockets cannot be dumped", probeUnixDiag(), nil},
		{"userfaultfd write-protect, async (Linux 6.7)", false, "--track-mem tracks nothing: every dump (pre-dumps included) writes all memory", probeUffdWP(), []string{"track"}},
		{"timer_create with chosen IDs (PR_TIMER_CREATE_RESTORE_IDS, Linux 6.17)", false, "processes with POSIX timers cannot be restored", probeTimerIDs(), nil},
		{"soft-dirty page bits (CONFIG_MEM_SOFT_DIRTY)", false, "none: gocr tracks writes with userfaultfd write-protect, not soft-dirty bits", probeSoftDirty(), nil},
	}
}

func probePtraceScope() error {
	b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope")
	if err != nil {
		return nil // no Yama: classic ptrace rules
	}
	if v, _ := strconv.Atoi(strings.TrimSpace(string(b))); v >= 3 {
		return fmt.Errorf("Yama ptrace_scope is %d: ptrace attach is disabled", v)
	}
	return nil
}

func probeClone3SetTid() error {
	// set_tid_size 1 with no set_tid array: EINVAL where set_tid exists, E2BIG (unknown
	// trailing fields) before 5.5, ENOSYS before 5.3. No process is ever made.
	args := struct{ Flags, Pidfd, ChildTid, ParentTid, ExitSignal, Stack, StackSize, TLS, SetTid, SetTidSize, Cgroup uint64 }{SetTidSize: 1}
	_, _, e := unix.RawSyscall(unix.SYS_CLONE3, uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args), 0)
	if e == unix.EINVAL {
		return nil
	}
	return fmt.Errorf("%w (clone3 said %v)", errMissing, e)
}

func probePidfdGetfd() error {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(fd)
	if _, err := unix.PidfdGetfd(fd, -1, 0); err == unix.ENOSYS {
		return fmt.Errorf("pidfd_getfd: %w", errMissing)
	}
	return nil
}

func probeSetMMMap() error {
	var size uint32
	if err := unix.Prctl(unix.PR_SET_MM, unix.PR_SET_MM_MAP_SIZE, uintptr(unsafe.Pointer(&size)), 0, 0); err != nil {
		return fmt.Errorf("%w (%v)", errMissing, err)
	}
	if size != 104 {
		return fmt.Errorf("struct prctl_mm_map is %d bytes here, gocr knows 104", size)
	}
	return nil
}

func probeKcmp() error {
	pid := os.Getpid()
	_, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(pid), kcmpFile, 0, 0, 0)
	if e == unix.ENOSYS {
		return errMissing
	}
	return nil
}

func probePagemapScan() error {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return err
	}
	defer f.Close()
	var arg pmScanArg // size 0: EINVAL where the ioctl exists
	_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), pagemapScan, uintptr(unsafe.Pointer(&arg)))
	if e == unix.EINVAL {
		return nil
	}
	return fmt.Errorf("%w (ioctl said %v)", errMissing, e)
}

func probeChildren() error {
	_, err := os.Stat(fmt.Sprintf("/proc/%d/task/%d/children", os.Getpid(), os.Getpid()))
	return err
}

func probeMapFiles() error {
	_, err := os.ReadDir(fmt.Sprintf("/proc/%d/map_files", os.Getpid()))
	return err
}

func probeVMReadv() error {
	src := []byte("probe")
	dst := make([]byte, len(src))
	_, err := ProcessVMReadv(os.Getpid(), dst, uint64(uintptr(unsafe.Pointer(&src[0]))))
	return err
}

func probeUnixDiag() error {
	a, b, err := Socketpair(unix.SOCK_STREAM)
	if err != nil {
		return err
	}
	defer unix.Close(a)
	defer unix.Close(b)
	st, err := Fstat(a)
	if err != nil {
		return err
	}
	_, err = UnixDiag(uint32(st.Ino))
	return err
}

func probeUffdWP() error {
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK|UffdUserModeOnly, 0, 0)
	if e != 0 {
		return fmt.Errorf("userfaultfd: %w", e)
	}
	defer unix.Close(int(fd))
	if err := UffdAPI(int(fd), UffdFeatureWPAsync); err != nil {
		return fmt.Errorf("UFFDIO_API with UFFD_FEATURE_WP_ASYNC: %w", err)
	}
	return nil
}

func probeSoftDirty() error {
	// Write a fresh page and read its pagemap entry: bit 55 is soft-dirty.
	page, err := unix.Mmap(-1, 0, PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return err
	}
	defer unix.Munmap(page)
	page[0] = 1
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return err
	}
	defer f.Close()
	var e [8]byte
	if _, err := f.ReadAt(e[:], int64(uintptr(unsafe.Pointer(&page[0]))/PageSize*8)); err != nil {
		return err
	}
	if *(*uint64)(unsafe.Pointer(&e[0]))&(1<<55) == 0 {
		return errMissing
	}
	return nil
}

func probeTimerIDs() error {
	// Turning it off is harmless, and fails with EINVAL where the option does not exist.
	if err := unix.Prctl(PrTimerCreateRestoreIDs, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("%w (%v)", errMissing, err)
	}
	return nil
}
