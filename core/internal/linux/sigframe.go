package linux

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SysRtSigreturn is rt_sigreturn(2); SSOnstack is sigaltstack's "on it now" flag.
const (
	SysRtSigreturn = unix.SYS_RT_SIGRETURN
	SSOnstack      = 1 // SS_ONSTACK (asm-generic/signal-defs.h)
	SSDisable      = 2 // SS_DISABLE
)

// Sigcontext is struct sigcontext (x86_64, asm/sigcontext.h): the registers rt_sigreturn
// puts back.
type Sigcontext struct {
	R8, R9, R10, R11, R12, R13, R14, R15 uint64
	Rdi, Rsi, Rbp, Rbx, Rdx, Rax, Rcx    uint64
	Rsp, Rip, Eflags                     uint64
	Cs, Gs, Fs, Ss                       uint16
	Err, Trapno, Oldmask, Cr2            uint64
	Fpstate                              uint64 // user pointer to the XSAVE area
	Reserved1                            [8]uint64
}

// StackT is stack_t (asm-generic/signal.h).
type StackT struct {
	Sp    uint64
	Flags int32
	_     int32
	Size  uint64
}

// Ucontext is the kernel's struct ucontext (x86_64, asm/ucontext.h).
type Ucontext struct {
	Flags    uint64
	Link     uint64
	Stack    StackT
	Mcontext Sigcontext
	Sigmask  uint64
}

// RtSigframe is struct rt_sigframe (arch/x86/include/asm/sigframe.h): rt_sigreturn finds it
// at the stack pointer minus 8 (where the handler's return address was).
type RtSigframe struct {
	Pretcode uint64
	Uc       Ucontext
	Info     [128]byte // siginfo_t, not read by rt_sigreturn
}

// ucontext flags (asm/ucontext.h).
const (
	ucFpXstate         = 0x1
	ucSigcontextSS     = 0x2
	ucStrictRestoreSS  = 0x4
	fpXstateMagic2     = 0x46505845
	fpXstateMagic2Size = 4
	xsaveAlign         = 64
)

// sigframeXstateAt is where the XSAVE area goes after the frame, aligned as XRSTOR needs.
var sigframeXstateAt = (int(unsafe.Sizeof(RtSigframe{})) + xsaveAlign - 1) &^ (xsaveAlign - 1)

// SigframeSize is the room a frame with an XSAVE area of xstate bytes takes.
func SigframeSize(xstate int) int {
	return (sigframeXstateAt + xstate + fpXstateMagic2Size + xsaveAlign - 1) &^ (xsaveAlign - 1)
}

// Sigframe is a signal frame that, handed to rt_sigreturn at addr (the stack pointer then
// being addr+8), gives the thread back exactly regs, its signal mask, its sigaltstack and its
// XSTATE (as PTRACE_GETREGSET NT_X86_XSTATE gave it: its software bytes are the ones the
// kernel checks in a frame). addr must be 64-byte aligned; pretcode is the return address a
// `ret` into rt_sigreturn takes from the frame's first word.
func Sigframe(addr, pretcode uint64, regs *Regs, mask uint64, alt StackT, xstate []byte) []byte {
	f := RtSigframe{Pretcode: pretcode}
	f.Uc.Flags = ucFpXstate | ucSigcontextSS | ucStrictRestoreSS
	f.Uc.Stack = alt
	f.Uc.Sigmask = mask
	f.Uc.Mcontext = Sigcontext{
		R8: regs.R8, R9: regs.R9, R10: regs.R10, R11: regs.R11, R12: regs.R12, R13: regs.R13, R14: regs.R14, R15: regs.R15,
		Rdi: regs.Rdi, Rsi: regs.Rsi, Rbp: regs.Rbp, Rbx: regs.Rbx, Rdx: regs.Rdx, Rax: regs.Rax, Rcx: regs.Rcx,
		Rsp: regs.Rsp, Rip: regs.Rip, Eflags: regs.Eflags, Cs: uint16(regs.Cs), Ss: uint16(regs.Ss),
		Fpstate: addr + uint64(sigframeXstateAt),
	}
	out := make([]byte, SigframeSize(len(xstate)))
	copy(out, unsafe.Slice((*byte)(unsafe.Pointer(&f)), unsafe.Sizeof(f)))
	copy(out[sigframeXstateAt:], xstate)
	binary.LittleEndian.PutUint32(out[sigframeXstateAt+len(xstate):], fpXstateMagic2)
	return out
}

// SafeReturnCode is what a thread runs after an injected syscall when the tracer died during
// it: `syscall` (the injected call), then `mov $15, %eax; syscall`, rt_sigreturn through the
// frame at its stack pointer, which puts the thread back as it was.
var SafeReturnCode = []byte{0x0f, 0x05, 0xb8, byte(SysRtSigreturn), 0, 0, 0, 0x0f, 0x05}
