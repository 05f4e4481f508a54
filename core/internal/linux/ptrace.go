package linux

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Regs is struct user_regs_struct (asm/user_64.h), the NT_PRSTATUS regset on x86_64.
type Regs = unix.PtraceRegs

// Ptrace options and events used by the tracer.
const (
	OptTraceSysGood = unix.PTRACE_O_TRACESYSGOOD
	OptTraceFork    = unix.PTRACE_O_TRACEFORK
	OptTraceClone   = unix.PTRACE_O_TRACECLONE
	OptTraceVfork   = unix.PTRACE_O_TRACEVFORK
	OptExitKill     = unix.PTRACE_O_EXITKILL
	// OptSuspendSeccomp lets injected syscalls through the tracee's seccomp filters
	// (CAP_SYS_ADMIN).
	OptSuspendSeccomp = unix.PTRACE_O_SUSPEND_SECCOMP

	EventFork  = unix.PTRACE_EVENT_FORK
	EventVfork = unix.PTRACE_EVENT_VFORK
	EventClone = unix.PTRACE_EVENT_CLONE
	EventStop  = unix.PTRACE_EVENT_STOP
)

const (
	ntPRStatus  = 1     // NT_PRSTATUS, elf.h
	ntX86XState = 0x202 // NT_X86_XSTATE, elf.h

	ptraceGetRseqConfiguration = 0x420f // PTRACE_GET_RSEQ_CONFIGURATION, linux/ptrace.h
	ptracePeekSigInfoShared    = 1      // PTRACE_PEEKSIGINFO_SHARED
)

func ptrace(req int, pid int, addr, data uintptr) (uintptr, error) {
	r, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, data, 0, 0)
	if e != 0 {
		return 0, e
	}
	return r, nil
}

func ptraceErr(name string, pid int, err error) error {
	if err == nil {
		return nil
	}
	return os.NewSyscallError(name, err)
}

// Seize attaches to pid with PTRACE_SEIZE without stopping it.
func Seize(pid int, opts int) error {
	_, err := ptrace(unix.PTRACE_SEIZE, pid, 0, uintptr(opts))
	return ptraceErr("ptrace(PTRACE_SEIZE)", pid, err)
}

// Interrupt stops a seized tracee (PTRACE_INTERRUPT).
func Interrupt(pid int) error {
	_, err := ptrace(unix.PTRACE_INTERRUPT, pid, 0, 0)
	return ptraceErr("ptrace(PTRACE_INTERRUPT)", pid, err)
}

// SetOptions sets PTRACE_O_* options (PTRACE_SETOPTIONS).
func SetOptions(pid int, opts int) error {
	_, err := ptrace(unix.PTRACE_SETOPTIONS, pid, 0, uintptr(opts))
	return ptraceErr("ptrace(PTRACE_SETOPTIONS)", pid, err)
}

// Detach detaches from pid, delivering sig (0 for none).
func Detach(pid int, sig int) error {
	_, err := ptrace(unix.PTRACE_DETACH, pid, 0, uintptr(sig))
	return ptraceErr("ptrace(PTRACE_DETACH)", pid, err)
}

// Cont resumes a stopped tracee, delivering sig (0 for none).
func Cont(pid int, sig int) error {
	_, err := ptrace(unix.PTRACE_CONT, pid, 0, uintptr(sig))
	return ptraceErr("ptrace(PTRACE_CONT)", pid, err)
}

// ContSyscall resumes a tracee until the next syscall entry or exit (PTRACE_SYSCALL).
func ContSyscall(pid int, sig int) error {
	_, err := ptrace(unix.PTRACE_SYSCALL, pid, 0, uintptr(sig))
	return ptraceErr("ptrace(PTRACE_SYSCALL)", pid, err)
}

// GetEventMsg returns the message of the last ptrace event (PTRACE_GETEVENTMSG).
func GetEventMsg(pid int) (uint64, error) {
	var msg uint64
	_, err := ptrace(unix.PTRACE_GETEVENTMSG, pid, 0, uintptr(unsafe.Pointer(&msg)))
	return msg, ptraceErr("ptrace(PTRACE_GETEVENTMSG)", pid, err)
}

func getRegSet(pid int, typ uintptr, buf []byte) (int, error) {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	_, err := ptrace(unix.PTRACE_GETREGSET, pid, typ, uintptr(unsafe.Pointer(&iov)))
	if err != nil {
		return 0, err
	}
	return int(iov.Len), nil
}

func setRegSet(pid int, typ uintptr, buf []byte) error {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	_, err := ptrace(unix.PTRACE_SETREGSET, pid, typ, uintptr(unsafe.Pointer(&iov)))
	return err
}

// GetRegs reads the general registers, fs_base and gs_base included (NT_PRSTATUS).
func GetRegs(pid int) (Regs, error) {
	var r Regs
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&r)), unsafe.Sizeof(r))
	_, err := getRegSet(pid, ntPRStatus, buf)
	return r, ptraceErr("ptrace(PTRACE_GETREGSET, NT_PRSTATUS)", pid, err)
}

// SetRegs writes the general registers (NT_PRSTATUS).
func SetRegs(pid int, r *Regs) error {
	buf := unsafe.Slice((*byte)(unsafe.Pointer(r)), unsafe.Sizeof(*r))
	return ptraceErr("ptrace(PTRACE_SETREGSET, NT_PRSTATUS)", pid, setRegSet(pid, ntPRStatus, buf))
}

// maxXState is larger than any XSAVE area the kernel exposes today (AMX makes it about 11 KiB).
const maxXState = 64 << 10

// GetXState reads the whole XSAVE area (NT_X86_XSTATE) at the size the kernel uses here.
func GetXState(pid int) ([]byte, error) {
	buf := make([]byte, maxXState)
	n, err := getRegSet(pid, ntX86XState, buf)
	if err != nil {
		return nil, ptraceErr("ptrace(PTRACE_GETREGSET, NT_X86_XSTATE)", pid, err)
	}
	return buf[:n], nil
}

// SetXState writes the XSAVE area; the kernel needs its exact size.
func SetXState(pid int, xs []byte) error {
	return ptraceErr("ptrace(PTRACE_SETREGSET, NT_X86_XSTATE)", pid, setRegSet(pid, ntX86XState, xs))
}

// XStateFeatures returns the XCR0 bits that the kernel stores for ptrace in the
// software-reserved bytes of the FXSAVE area (offset 464, as GDB's
// I386_LINUX_XSAVE_XCR0_OFFSET), or 0 if absent.
func XStateFeatures(xs []byte) uint64 {
	if len(xs) < 472 {
		return 0
	}
	return *(*uint64)(unsafe.Pointer(&xs[464]))
}

// GetSigMask reads the blocked signal mask (PTRACE_GETSIGMASK).
func GetSigMask(pid int) (uint64, error) {
	var m uint64
	_, err := ptrace(unix.PTRACE_GETSIGMASK, pid, 8, uintptr(unsafe.Pointer(&m)))
	return m, ptraceErr("ptrace(PTRACE_GETSIGMASK)", pid, err)
}

// SetSigMask sets the blocked signal mask (PTRACE_SETSIGMASK).
func SetSigMask(pid int, m uint64) error {
	_, err := ptrace(unix.PTRACE_SETSIGMASK, pid, 8, uintptr(unsafe.Pointer(&m)))
	return ptraceErr("ptrace(PTRACE_SETSIGMASK)", pid, err)
}

// SigInfoSize is sizeof(siginfo_t).
const SigInfoSize = 128

// peekSigInfoArgs is struct ptrace_peeksiginfo_args (linux/ptrace.h).
type peekSigInfoArgs struct {
	Off   uint64
	Flags uint32
	Nr    int32
}

// PeekSigInfo returns the queued signals, thread-private or process-wide (shared), as raw
// siginfo_t records, without dequeuing them (PTRACE_PEEKSIGINFO).
func PeekSigInfo(pid int, shared bool) ([][]byte, error) {
	var out [][]byte
	buf := make([]byte, 32*SigInfoSize)
	args := peekSigInfoArgs{Nr: 32}
	if shared {
		args.Flags = ptracePeekSigInfoShared
	}
	for {
		n, err := ptrace(unix.PTRACE_PEEKSIGINFO, pid, uintptr(unsafe.Pointer(&args)), uintptr(unsafe.Pointer(&buf[0])))
		if err != nil {
			return nil, ptraceErr("ptrace(PTRACE_PEEKSIGINFO)", pid, err)
		}
		for i := 0; i < int(n); i++ {
			out = append(out, append([]byte(nil), buf[i*SigInfoSize:(i+1)*SigInfoSize]...))
		}
		if int(n) < int(args.Nr) {
			return out, nil
		}
		args.Off += uint64(n)
	}
}

// RseqConfig is struct ptrace_rseq_configuration (linux/ptrace.h), 32 bytes.
type RseqConfig struct {
	AbiPointer uint64
	Len        uint32
	Signature  uint32
	Flags      uint32
	_          uint32
}

// GetRseqConfig reads the thread's rseq registration (PTRACE_GET_RSEQ_CONFIGURATION).
func GetRseqConfig(pid int) (RseqConfig, error) {
	var c RseqConfig
	_, err := ptrace(ptraceGetRseqConfiguration, pid, unsafe.Sizeof(c), uintptr(unsafe.Pointer(&c)))
	return c, ptraceErr("ptrace(PTRACE_GET_RSEQ_CONFIGURATION)", pid, err)
}

// WaitStatus is the status wait4 reports.
type WaitStatus = unix.WaitStatus

// Wait4 waits for pid with __WALL|flags, retrying on EINTR.
func Wait4(pid int, flags int) (int, WaitStatus, error) {
	var ws unix.WaitStatus
	for {
		wpid, err := unix.Wait4(pid, &ws, unix.WALL|flags, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, ws, os.NewSyscallError("wait4", err)
		}
		return wpid, ws, nil
	}
}

// WNOHANG for Wait4.
const WNOHANG = unix.WNOHANG

// SeccompFilters returns the classic BPF programs of a thread's seccomp filters, oldest first
// (PTRACE_SECCOMP_GET_FILTER), each as its raw struct sock_filter array.
func SeccompFilters(pid int) ([][]byte, error) {
	var out [][]byte
	for i := 0; ; i++ {
		n, err := ptrace(unix.PTRACE_SECCOMP_GET_FILTER, pid, uintptr(i), 0)
		if err == unix.ENOENT {
			break
		}
		if err != nil {
			return nil, ptraceErr("ptrace(PTRACE_SECCOMP_GET_FILTER)", pid, err)
		}
		buf := make([]byte, 8*n)
		if _, err := ptrace(unix.PTRACE_SECCOMP_GET_FILTER, pid, uintptr(i), uintptr(unsafe.Pointer(&buf[0]))); err != nil {
			return nil, ptraceErr("ptrace(PTRACE_SECCOMP_GET_FILTER)", pid, err)
		}
		out = append(out, buf)
	}
	for l, r := 0, len(out)-1; l < r; l, r = l+1, r-1 { // index 0 is the newest
		out[l], out[r] = out[r], out[l]
	}
	return out, nil
}

// SysSeccomp and SeccompSetModeFilter install a filter from inside a process.
const (
	SysSeccomp           = unix.SYS_SECCOMP
	SeccompSetModeFilter = unix.SECCOMP_SET_MODE_FILTER
)
