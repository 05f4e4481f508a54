package linux

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Syscall numbers (x86_64) the tracer injects into targets.
const (
	SysRead           = unix.SYS_READ
	SysClose          = unix.SYS_CLOSE
	SysWrite          = unix.SYS_WRITE
	SysMmap           = unix.SYS_MMAP
	SysNanosleep      = unix.SYS_NANOSLEEP
	SysExitGroup      = unix.SYS_EXIT_GROUP
	SysRtSigtimedwait = unix.SYS_RT_SIGTIMEDWAIT
	RlimitCore        = unix.RLIMIT_CORE
	SysMprotect       = unix.SYS_MPROTECT
	SysMunmap         = unix.SYS_MUNMAP
	SysMlock2         = unix.SYS_MLOCK2
	SysBrk            = unix.SYS_BRK
	SysRtSigaction    = unix.SYS_RT_SIGACTION
	SysPreadv         = unix.SYS_PREADV
	SysMremap         = unix.SYS_MREMAP
	SysMadvise        = unix.SYS_MADVISE
	SysDup3           = unix.SYS_DUP3
	SysGetitimer      = unix.SYS_GETITIMER
	SysSetitimer      = unix.SYS_SETITIMER
	SysFcntl          = unix.SYS_FCNTL
	SysChdir          = unix.SYS_CHDIR
	SysFchdir         = unix.SYS_FCHDIR
	SysUmask          = unix.SYS_UMASK
	SysSetpgid        = unix.SYS_SETPGID
	SysSetsid         = unix.SYS_SETSID
	SysSetresuid      = unix.SYS_SETRESUID
	SysSetresgid      = unix.SYS_SETRESGID
	SysSetgroups      = unix.SYS_SETGROUPS
	SysCapset         = unix.SYS_CAPSET
	SysSigaltstack    = unix.SYS_SIGALTSTACK
	SysPersonality    = unix.SYS_PERSONALITY
	SysPrctl          = unix.SYS_PRCTL
	SysChroot         = unix.SYS_CHROOT
	SysSetTidAddress  = unix.SYS_SET_TID_ADDRESS
	SysOpenat         = unix.SYS_OPENAT
	SysSetRobustList  = unix.SYS_SET_ROBUST_LIST
	SysRtSigqueueinfo = unix.SYS_RT_SIGQUEUEINFO
	SysRtTgsigqueue   = unix.SYS_RT_TGSIGQUEUEINFO
	SysPrlimit64      = unix.SYS_PRLIMIT64
	SysRseq           = unix.SYS_RSEQ
	SysPidfdOpen      = unix.SYS_PIDFD_OPEN
	SysClone3         = unix.SYS_CLONE3
	SysPidfdGetfd     = unix.SYS_PIDFD_GETFD
	SysCloseRange     = unix.SYS_CLOSE_RANGE
	SysRestartSyscall = unix.SYS_RESTART_SYSCALL
	SysTimerCreate    = unix.SYS_TIMER_CREATE
	SysTimerSettime   = unix.SYS_TIMER_SETTIME
	SysTimerGettime   = unix.SYS_TIMER_GETTIME
	SysMembarrier     = unix.SYS_MEMBARRIER
)

// Kernel constants used to build injected calls.
const (
	ProtRead     = unix.PROT_READ
	ProtWrite    = unix.PROT_WRITE
	ProtExec     = unix.PROT_EXEC
	MadvDontneed = unix.MADV_DONTNEED

	MapPrivate        = unix.MAP_PRIVATE
	MapShared         = unix.MAP_SHARED
	MapAnonymous      = unix.MAP_ANONYMOUS
	MapFixed          = unix.MAP_FIXED
	MapFixedNoreplace = unix.MAP_FIXED_NOREPLACE
	MapGrowsdown      = unix.MAP_GROWSDOWN
	MapNoreserve      = unix.MAP_NORESERVE
	MapPopulate       = unix.MAP_POPULATE

	MremapMaymove = unix.MREMAP_MAYMOVE
	MremapFixed   = unix.MREMAP_FIXED

	MadvDontfork   = unix.MADV_DONTFORK
	MadvDontdump   = unix.MADV_DONTDUMP
	MadvHugepage   = unix.MADV_HUGEPAGE
	MadvNohugepage = unix.MADV_NOHUGEPAGE
	MadvWipeonfork = unix.MADV_WIPEONFORK
	MlockOnfault   = unix.MLOCK_ONFAULT

	ORdonly   = unix.O_RDONLY
	OWronly   = unix.O_WRONLY
	ORdwr     = unix.O_RDWR
	OAccmode  = unix.O_ACCMODE
	OCloexec  = unix.O_CLOEXEC
	ONonblock = unix.O_NONBLOCK
	OPath     = unix.O_PATH
	OAsync    = unix.O_ASYNC
	OCreat    = unix.O_CREAT
	OExcl     = unix.O_EXCL
	OTrunc    = unix.O_TRUNC
	ONoctty   = unix.O_NOCTTY
	OTmpfile  = unix.O_TMPFILE
	ATFdcwd   = unix.AT_FDCWD

	FGetfd = unix.F_GETFD
	FSetfd = unix.F_SETFD
	FSetfl = unix.F_SETFL

	PrSetName           = unix.PR_SET_NAME
	PrSetPdeathsig      = unix.PR_SET_PDEATHSIG
	PrGetPdeathsig      = unix.PR_GET_PDEATHSIG
	PrGetTidAddress     = unix.PR_GET_TID_ADDRESS
	PrSetMM             = unix.PR_SET_MM
	PrSetMMMap          = unix.PR_SET_MM_MAP
	PrSetNoNewPrivs     = unix.PR_SET_NO_NEW_PRIVS
	PrSetChildSubreaper = unix.PR_SET_CHILD_SUBREAPER
	PrGetChildSubreaper = unix.PR_GET_CHILD_SUBREAPER
	PrGetDumpable       = unix.PR_GET_DUMPABLE
	PrSetDumpable       = unix.PR_SET_DUMPABLE
	PrGetTHPDisable     = unix.PR_GET_THP_DISABLE
	PrSetTHPDisable     = unix.PR_SET_THP_DISABLE
	PrGetSecurebits     = unix.PR_GET_SECUREBITS
	PrSetSecurebits     = unix.PR_SET_SECUREBITS
	PrSetKeepcaps       = unix.PR_SET_KEEPCAPS
	PrCapbsetDrop       = unix.PR_CAPBSET_DROP
	PrCapAmbient        = unix.PR_CAP_AMBIENT
	PrCapAmbientRaise   = unix.PR_CAP_AMBIENT_RAISE

	// CapabilityVersion3 is _LINUX_CAPABILITY_VERSION_3 (64-bit sets, two data words).
	CapabilityVersion3 = unix.LINUX_CAPABILITY_VERSION_3

	// MembarrierGetRegistrations asks which membarrier commands a process registered for
	// (MEMBARRIER_CMD_GET_REGISTRATIONS, Linux 6.3); the answer's bits are the REGISTER_*
	// commands, each of which registers again.
	MembarrierGetRegistrations = 1 << 9
	// PrTimerCreateRestoreIDs makes timer_create take the ID it is given (Linux 6.17).
	PrTimerCreateRestoreIDs = 77

	SIGKILL = int(unix.SIGKILL)
	SIGSTOP = int(unix.SIGSTOP)
	SIGTRAP = int(unix.SIGTRAP)
	SIGCONT = int(unix.SIGCONT)
	SIGTSTP = int(unix.SIGTSTP)
	SIGTTIN = int(unix.SIGTTIN)
	SIGTTOU = int(unix.SIGTTOU)
	SIGCHLD = int(unix.SIGCHLD)
	SIGINT  = int(unix.SIGINT)
	SIGSEGV = int(unix.SIGSEGV)
	SIGBUS  = int(unix.SIGBUS)
	SIGILL  = int(unix.SIGILL)
	SIGFPE  = int(unix.SIGFPE)
)

// Errno values callers test for.
var (
	ESRCH  = unix.ESRCH
	EPERM  = unix.EPERM
	EEXIST = unix.EEXIST
	ENOENT = unix.ENOENT
	EAGAIN = unix.EAGAIN
	EACCES = unix.EACCES
	EINVAL = unix.EINVAL
	EBADF  = unix.EBADF

	EADDRINUSE = unix.EADDRINUSE
)

// Errno is a kernel error number.
type Errno = unix.Errno

// PageSize is the base page size.
const PageSize = 4096

// Kill sends sig to pid.
func Kill(pid int, sig int) error {
	return os.NewSyscallError("kill", unix.Kill(pid, unix.Signal(sig)))
}

// Tgkill sends sig to one thread.
func Tgkill(tgid, tid int, sig int) error {
	return os.NewSyscallError("tgkill", unix.Tgkill(tgid, tid, unix.Signal(sig)))
}

// Tkill sends sig to thread tid (tkill(2): no thread group needed).
func Tkill(tid int, sig int) error {
	_, _, e := unix.RawSyscall(unix.SYS_TKILL, uintptr(tid), uintptr(sig), 0)
	if e != 0 {
		return os.NewSyscallError("tkill", e)
	}
	return nil
}

// ProcessVMReadv copies from the remote process's memory at raddr into buf, as far as it can.
func ProcessVMReadv(pid int, buf []byte, raddr uint64) (int, error) {
	local := []unix.Iovec{{Base: &buf[0]}}
	local[0].SetLen(len(buf))
	remote := []unix.RemoteIovec{{Base: uintptr(raddr), Len: len(buf)}}
	for {
		n, err := unix.ProcessVMReadv(pid, local, remote, 0)
		if err == unix.EINTR {
			continue
		}
		return n, os.NewSyscallError("process_vm_readv", err)
	}
}

// ProcessVMReadvMany reads several remote ranges into one local buffer, in order.
func ProcessVMReadvMany(pid int, buf []byte, remote []unix.RemoteIovec) (int, error) {
	local := []unix.Iovec{{Base: &buf[0]}}
	local[0].SetLen(len(buf))
	for {
		n, err := unix.ProcessVMReadv(pid, local, remote, 0)
		if err == unix.EINTR {
			continue
		}
		return n, os.NewSyscallError("process_vm_readv", err)
	}
}

// RemoteIovec is struct iovec in another process.
type RemoteIovec = unix.RemoteIovec

// ProcessVMWritev copies buf into the remote process's memory at raddr.
func ProcessVMWritev(pid int, buf []byte, raddr uint64) (int, error) {
	local := []unix.Iovec{{Base: &buf[0]}}
	local[0].SetLen(len(buf))
	remote := []unix.RemoteIovec{{Base: uintptr(raddr), Len: len(buf)}}
	for {
		n, err := unix.ProcessVMWritev(pid, local, remote, 0)
		if err == unix.EINTR {
			continue
		}
		return n, os.NewSyscallError("process_vm_writev", err)
	}
}

// PidfdOpenFlags returns a pidfd for pid with the open flags a dumped one had: O_NONBLOCK
// (PIDFD_NONBLOCK) and O_EXCL (PIDFD_THREAD: pid is a thread id).
func PidfdOpenFlags(pid int, flags int) (int, error) {
	fd, err := unix.PidfdOpen(pid, flags&(unix.O_NONBLOCK|unix.O_EXCL)) // always close-on-exec
	return fd, os.NewSyscallError("pidfd_open", err)
}

// PidfdOpen returns a pidfd for pid.
func PidfdOpen(pid int) (int, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	return fd, os.NewSyscallError("pidfd_open", err)
}

// PidfdGetfd duplicates fd number targetfd of the process behind pidfd into this process.
func PidfdGetfd(pidfd, targetfd int) (int, error) {
	fd, err := unix.PidfdGetfd(pidfd, targetfd, 0)
	return fd, os.NewSyscallError("pidfd_getfd", err)
}

const (
	kcmpFile     = 0 // KCMP_FILE, linux/kcmp.h
	kcmpFiles    = 2 // KCMP_FILES
	kcmpEpollTfd = 7 // KCMP_EPOLL_TFD
)

// SameFdTable says whether processes a and b share one fd table (clone with CLONE_FILES).
func SameFdTable(a, b int) (bool, error) {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(a), uintptr(b), kcmpFiles, 0, 0, 0)
	if e != 0 {
		return false, os.NewSyscallError("kcmp(KCMP_FILES)", e)
	}
	return r == 0, nil
}

// kcmpEpollSlot is struct kcmp_epoll_slot: an epoll fd, a watched fd number, and which of
// the items with that number.
type kcmpEpollSlot struct{ Efd, Tfd, Toff uint32 }

// IsEpollTarget says whether the open file behind fd (of this process) is the one epoll
// instance epfd (of this process) watches as the toff-th item under number tfd.
func IsEpollTarget(fd, epfd, tfd, toff int) (bool, error) {
	pid := os.Getpid()
	slot := kcmpEpollSlot{uint32(epfd), uint32(tfd), uint32(toff)}
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(pid), kcmpEpollTfd, uintptr(fd), uintptr(unsafe.Pointer(&slot)), 0)
	if e != 0 {
		return false, os.NewSyscallError("kcmp(KCMP_EPOLL_TFD)", e)
	}
	return r == 0, nil
}

// CompareFiles orders the open file descriptions behind fds a and b of this process with
// kcmp(KCMP_FILE): 0 when they are the same, -1 or 1 in an order that is stable while both
// exist, so that descriptions can be kept sorted and found by binary search.
func CompareFiles(a, b int) (int, error) {
	pid := os.Getpid()
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(pid), kcmpFile, uintptr(a), uintptr(b), 0)
	if e != 0 {
		return 0, os.NewSyscallError("kcmp", e)
	}
	switch r {
	case 0:
		return 0, nil
	case 1:
		return -1, nil
	case 2:
		return 1, nil
	}
	return 0, fmt.Errorf("kcmp: unexpected result %d", r)
}

// Tee duplicates up to n bytes from pipe in to pipe out without consuming them.
func Tee(in, out int, n int) (int64, error) {
	for {
		m, err := unix.Tee(in, out, n, unix.SPLICE_F_NONBLOCK)
		if err == unix.EINTR {
			continue
		}
		return m, os.NewSyscallError("tee", err)
	}
}

// Pipe2 creates a pipe.
func Pipe2(flags int) (r, w int, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], flags); err != nil {
		return -1, -1, os.NewSyscallError("pipe2", err)
	}
	return p[0], p[1], nil
}

// GetFl returns the file status flags of fd (F_GETFL).
func GetFl(fd int) (int, error) {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return 0, os.NewSyscallError("fcntl(F_GETFL)", err)
	}
	return fl, nil
}

// DupCloexec duplicates fd, close-on-exec (F_DUPFD_CLOEXEC).
func DupCloexec(fd int) (int, error) {
	n, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", err)
	}
	return n, nil
}

// PipeSize returns a pipe's capacity (F_GETPIPE_SZ).
func PipeSize(fd int) (int, error) {
	n, err := unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0)
	return n, os.NewSyscallError("fcntl(F_GETPIPE_SZ)", err)
}

// SetPipeSize sets a pipe's capacity (F_SETPIPE_SZ).
func SetPipeSize(fd int, size int) error {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, size)
	return os.NewSyscallError("fcntl(F_SETPIPE_SZ)", err)
}

// Stat is struct stat.
type Stat = unix.Stat_t

// Fstat stats an fd.
func Fstat(fd int) (Stat, error) {
	var st unix.Stat_t
	err := unix.Fstat(fd, &st)
	return st, os.NewSyscallError("fstat", err)
}

// Lstat stats a path without following a final symlink.
func Lstat(path string) (Stat, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return st, &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	return st, nil
}

// Stat the path.
func StatPath(path string) (Stat, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return st, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return st, nil
}

// File type bits of Stat.Mode.
const (
	SIFMT   = unix.S_IFMT
	SIFREG  = unix.S_IFREG
	SIFDIR  = unix.S_IFDIR
	SIFIFO  = unix.S_IFIFO
	SIFCHR  = unix.S_IFCHR
	SIFBLK  = unix.S_IFBLK
	SIFSOCK = unix.S_IFSOCK
	SIFLNK  = unix.S_IFLNK
)

// Close closes a raw fd.
func Close(fd int) error { return unix.Close(fd) }

// Read reads from a raw fd, retrying EINTR.
func Read(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		if err == unix.EINTR {
			continue
		}
		return n, err
	}
}

// Write writes all of b to a raw fd.
func Write(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("write", err)
		}
		b = b[n:]
	}
	return nil
}

// Open opens a path and returns the raw fd.
func Open(path string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Open(path, flags, mode)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}

// Seek sets a raw fd's offset.
func Seek(fd int, off int64, whence int) (int64, error) {
	n, err := unix.Seek(fd, off, whence)
	return n, os.NewSyscallError("lseek", err)
}

// Fchmod and friends used when recreating deleted files.
func Fchmod(fd int, mode uint32) error { return os.NewSyscallError("fchmod", unix.Fchmod(fd, mode)) }

// Unlink removes a path.
func Unlink(path string) error { return unix.Unlink(path) }

// SeekData and SeekHole whence values.
const (
	SeekData = unix.SEEK_DATA
	SeekHole = unix.SEEK_HOLE
)

// Pread reads at an offset, retrying EINTR.
func Pread(fd int, b []byte, off int64) (int, error) {
	for {
		n, err := unix.Pread(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		return n, err
	}
}

// Uname returns the kernel release.
func KernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// GetRobustList returns the robust futex list head and length of a thread (get_robust_list).
func GetRobustList(tid int) (head, length uint64, err error) {
	_, _, e := unix.Syscall(unix.SYS_GET_ROBUST_LIST, uintptr(tid), uintptr(unsafe.Pointer(&head)), uintptr(unsafe.Pointer(&length)))
	if e != 0 {
		return 0, 0, os.NewSyscallError("get_robust_list", e)
	}
	return head, length, nil
}

// SetChildSubreaper marks this process as a subreaper of its descendants.
func SetChildSubreaper() error {
	return os.NewSyscallError("prctl(PR_SET_CHILD_SUBREAPER)", unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
}

// CPUSet is a CPU affinity mask.
type CPUSet = unix.CPUSet

// GetAffinity returns the CPU mask of tid (0: the calling thread).
func GetAffinity(tid int) (CPUSet, error) {
	var set unix.CPUSet
	err := unix.SchedGetaffinity(tid, &set)
	return set, os.NewSyscallError("sched_getaffinity", err)
}

// SetAffinity sets the CPU mask of tid (0: the calling thread).
func SetAffinity(tid int, set CPUSet) error {
	return os.NewSyscallError("sched_setaffinity", unix.SchedSetaffinity(tid, &set))
}

// FirstCPU returns the lowest CPU of a mask, or 0.
func FirstCPU(set CPUSet) int {
	for i := 0; i < 1024; i++ {
		if set.IsSet(i) {
			return i
		}
	}
	return 0
}

// OneCPU is the mask of one CPU.
func OneCPU(cpu int) CPUSet {
	var set unix.CPUSet
	set.Set(cpu)
	return set
}

// Gettid returns the calling thread's id.
func Gettid() int { return unix.Gettid() }

// Fsync flushes a file's data and metadata.
func Fsync(fd int) error { return os.NewSyscallError("fsync", unix.Fsync(fd)) }

// SetFl sets an fd's status flags (F_SETFL): O_APPEND, O_NONBLOCK...
func SetFl(fd int, flags int) error {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags)
	return os.NewSyscallError("fcntl(F_SETFL)", err)
}

// Fallocate reserves size bytes for a file about to be written, so that the writes that
// follow need no block allocation.
func Fallocate(fd int, size int64) error {
	// KEEP_SIZE: a hint larger than what is then written must not leave zeros at the end.
	return os.NewSyscallError("fallocate", unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 0, size))
}

// Eventfd creates an eventfd holding count; semaphore sets EFD_SEMAPHORE.
func Eventfd(count uint64, semaphore bool, flags int) (int, error) {
	f := flags
	if semaphore {
		f |= unix.EFD_SEMAPHORE
	}
	fd, err := unix.Eventfd(0, f)
	if err != nil {
		return -1, os.NewSyscallError("eventfd2", err)
	}
	if count > 0 {
		var b [8]byte
		*(*uint64)(unsafe.Pointer(&b[0])) = count
		if err := Write(fd, b[:]); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	return fd, nil
}

// EpollCreate creates an epoll instance (close-on-exec).
func EpollCreate() (int, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	return fd, os.NewSyscallError("epoll_create1", err)
}

// SysEpollCtl and EpollCtlAdd are used to fill an epoll instance inside a process.
const (
	SysEpollCtl = unix.SYS_EPOLL_CTL
	EpollCtlAdd = unix.EPOLL_CTL_ADD
)

// SetForeground makes pgid the foreground process group of the terminal fd (TIOCSPGRP).
func SetForeground(fd, pgid int) error {
	return os.NewSyscallError("ioctl(TIOCSPGRP)", unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, pgid))
}

// TerminalOf returns the path of the terminal fd is on, or "" when it is not a terminal.
func TerminalOf(fd int) string {
	if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
		return ""
	}
	p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return ""
	}
	return p
}

// StartWriteback starts writing a file's dirty pages in [off, off+n) to disk without waiting
// (sync_file_range SYNC_FILE_RANGE_WRITE), so that a later fsync has less left to do.
func StartWriteback(fd int, off, n int64) error {
	return os.NewSyscallError("sync_file_range", unix.SyncFileRange(fd, off, n, unix.SYNC_FILE_RANGE_WRITE))
}

// Ioctl runs ioctl(fd, request, arg) with arg pointing at the buffer (or NULL when empty).
func Ioctl(fd int, request uint64, arg []byte) (int64, error) {
	var p uintptr
	if len(arg) > 0 {
		p = uintptr(unsafe.Pointer(&arg[0]))
	}
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(request), p)
	if e != 0 {
		return -1, os.NewSyscallError("ioctl", e)
	}
	return int64(r), nil
}

// IoctlPointing runs ioctl(fd, request, arg) where arg holds pointers to other buffers: the
// address of bufs[i] is written, as a little-endian u64, into arg at ats[i] first. The kernel
// reads and writes the buffers in place.
func IoctlPointing(fd int, request uint64, arg []byte, bufs [][]byte, ats []int) (int64, error) {
	for i, b := range bufs {
		if ats[i] < 0 || ats[i]+8 > len(arg) {
			return -1, fmt.Errorf("ioctl %#x: pointer %d at offset %d is outside the %d-byte argument", request, i, ats[i], len(arg))
		}
		var p uint64
		if len(b) > 0 {
			p = uint64(uintptr(unsafe.Pointer(&b[0])))
		}
		binary.LittleEndian.PutUint64(arg[ats[i]:], p)
	}
	r, err := Ioctl(fd, request, arg)
	runtime.KeepAlive(bufs)
	return r, err
}

// SizeofSchedAttr is the size of struct sched_attr that gocr passes.
const SizeofSchedAttr = unix.SizeofSchedAttr

// SchedAttr is a thread's scheduling policy and parameters (struct sched_attr).
type SchedAttr = unix.SchedAttr

// Scheduling policies and flags (linux/sched.h).
const (
	SchedOther         = 0
	SchedFIFO          = 1
	SchedRR            = 2
	SchedBatch         = 3
	SchedIdle          = 5
	SchedDeadline      = 6
	SchedFlagResetFork = 1
)

// GetSchedAttr returns tid's scheduling policy, nice value and priorities.
func GetSchedAttr(tid int) (*SchedAttr, error) {
	a, err := unix.SchedGetAttr(tid, 0)
	return a, os.NewSyscallError("sched_getattr", err)
}

// SetSchedAttr sets tid's scheduling policy, nice value and priorities.
func SetSchedAttr(tid int, a *SchedAttr) error {
	return os.NewSyscallError("sched_setattr", unix.SchedSetAttr(tid, a, 0))
}

// SetNice sets tid's nice value, whatever its policy (sched_setattr ignores the nice value
// of a SCHED_IDLE thread).
func SetNice(tid int, nice int) error {
	return os.NewSyscallError("setpriority", unix.Setpriority(unix.PRIO_PROCESS, tid, nice))
}

// CPUSetBytes encodes a CPU mask as cpu_set_t's bytes.
func CPUSetBytes(set CPUSet) []byte {
	b := make([]byte, 0, len(set)*8)
	for _, w := range set {
		b = binary.LittleEndian.AppendUint64(b, uint64(w))
	}
	return b
}

// CPUSetFromBytes decodes a cpu_set_t; bytes beyond what a CPUSet holds must be zero.
func CPUSetFromBytes(b []byte) (CPUSet, bool) {
	var set CPUSet
	for i := 0; i+8 <= len(b); i += 8 {
		w := binary.LittleEndian.Uint64(b[i:])
		if i/8 >= len(set) {
			if w != 0 {
				return set, false
			}
			continue
		}
		for bit := 0; bit < 64; bit++ {
			if w>>bit&1 != 0 {
				set.Set(i/8*64 + bit)
			}
		}
	}
	return set, len(b)%8 == 0
}

// FileOwner is who gets an open file's O_ASYNC signals: F_GETOWN_EX's type (F_OWNER_TID,
// F_OWNER_PID, F_OWNER_PGRP) and pid, and F_GETSIG's signal.
type FileOwner struct {
	Type, Pid, Signal int
}

// fOwnerEx is struct f_owner_ex (F_GETOWN_EX, F_SETOWN_EX): F_OWNER_TID 0, F_OWNER_PID 1,
// F_OWNER_PGRP 2, and the pid.
type fOwnerEx struct {
	Type int32
	Pid  int32
}

// GetOwner reads the owner and signal of the open file fd refers to.
func GetOwner(fd int) (FileOwner, error) {
	var ex fOwnerEx
	if _, _, e := unix.Syscall(unix.SYS_FCNTL, uintptr(fd), unix.F_GETOWN_EX, uintptr(unsafe.Pointer(&ex))); e != 0 {
		return FileOwner{}, os.NewSyscallError("fcntl(F_GETOWN_EX)", e)
	}
	sig, err := unix.FcntlInt(uintptr(fd), unix.F_GETSIG, 0)
	if err != nil {
		return FileOwner{}, os.NewSyscallError("fcntl(F_GETSIG)", err)
	}
	return FileOwner{Type: int(ex.Type), Pid: int(ex.Pid), Signal: sig}, nil
}

// SetOwner gives the open file fd refers to an owner and signal.
func SetOwner(fd int, o FileOwner) error {
	ex := fOwnerEx{Type: int32(o.Type), Pid: int32(o.Pid)}
	if _, _, e := unix.Syscall(unix.SYS_FCNTL, uintptr(fd), unix.F_SETOWN_EX, uintptr(unsafe.Pointer(&ex))); e != 0 {
		return os.NewSyscallError("fcntl(F_SETOWN_EX)", e)
	}
	if o.Signal != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETSIG, o.Signal); err != nil {
			return os.NewSyscallError("fcntl(F_SETSIG)", err)
		}
	}
	return nil
}

// Extent is a range of a file that holds data.
type Extent struct{ Off, Len int64 }

// DataExtents lists the ranges of fd's first size bytes that hold data (SEEK_DATA,
// SEEK_HOLE); the rest are holes. A file system without them gives one range.
func DataExtents(fd int, size int64) ([]Extent, error) {
	var out []Extent
	for off := int64(0); off < size; {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break // only holes from off on
		}
		if err == unix.EINVAL && off == 0 {
			return []Extent{{0, size}}, nil
		}
		if err != nil {
			return nil, os.NewSyscallError("lseek(SEEK_DATA)", err)
		}
		if d >= size {
			break
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			return nil, os.NewSyscallError("lseek(SEEK_HOLE)", err)
		}
		h = min(h, size)
		out = append(out, Extent{d, h - d})
		off = h
	}
	return out, nil
}

// Pwrite writes all of b at off.
func Pwrite(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("pwrite", err)
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// Ftruncate sets a file's size.
func Ftruncate(fd int, size int64) error {
	return os.NewSyscallError("ftruncate", unix.Ftruncate(fd, size))
}

// Fchown sets a file's owner and group.
func Fchown(fd int, uid, gid int) error {
	return os.NewSyscallError("fchown", unix.Fchown(fd, uid, gid))
}

// Futimens sets a file's access and modification times, in nanoseconds since the epoch.
func Futimens(fd int, atimeNs, mtimeNs int64) error {
	// futimens(3) is utimensat with no path.
	ts := [2]unix.Timespec{unix.NsecToTimespec(atimeNs), unix.NsecToTimespec(mtimeNs)}
	if _, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0); e != 0 {
		return os.NewSyscallError("futimens", e)
	}
	return nil
}

// KernelDev turns a device number as stat gives it into the kernel's own encoding (major <<
// 20 | minor), which sock_diag reports.
func KernelDev(dev uint64) uint32 { return unix.Major(dev)<<20 | unix.Minor(dev) }

// MmapSharedAnon maps size bytes of new shared anonymous memory in gocr.
func MmapSharedAnon(size int) ([]byte, error) {
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	return b, os.NewSyscallError("mmap", err)
}

// Munmap unmaps what MmapSharedAnon mapped.
func Munmap(b []byte) error { return os.NewSyscallError("munmap", unix.Munmap(b)) }

// MapFileOf opens the file behind gocr's mapping b (/proc/self/map_files), read-write.
func MapFileOf(b []byte) (int, error) {
	start := uintptr(unsafe.Pointer(&b[0]))
	return Open(fmt.Sprintf("/proc/self/map_files/%x-%x", start, start+uintptr(len(b))), unix.O_RDWR|unix.O_CLOEXEC, 0)
}

// PreadFull reads len(b) bytes at off.
func PreadFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := Pread(fd, b, off)
		if err != nil {
			return os.NewSyscallError("pread", err)
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// PidfdGetfdOf takes a dup of fd of process pid (close-on-exec in gocr).
func PidfdGetfdOf(pid, fd int) (int, error) {
	pidfd, err := PidfdOpenFlags(pid, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pidfd)
	return PidfdGetfd(pidfd, fd)
}

// LinkFd makes a hard link at newpath to the file the /proc fd link procFd leads to.
func LinkFd(procFd, newpath string) error {
	if err := unix.Linkat(unix.AT_FDCWD, procFd, unix.AT_FDCWD, newpath, unix.AT_SYMLINK_FOLLOW); err != nil {
		return &os.LinkError{Op: "link", Old: procFd, New: newpath, Err: err}
	}
	return nil
}
