package tracer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/procfs"
)

// Errors a caller tells apart.
var (
	// ErrExited means the tracee died while we held it.
	ErrExited = errors.New("process exited")
	// ErrNoSyscallInsn means no `syscall` instruction was found to inject through.
	ErrNoSyscallInsn = errors.New("no syscall instruction in the vdso")
	// ErrFault means the tracee faulted while running an injected syscall.
	ErrFault = errors.New("fault in injected code")
)

// Tracee is one stopped thread attached from a Thread. Every method must run on that Thread.
type Tracee struct {
	Pid int
	// Regs are the registers the thread had when it was stopped; injection starts from a
	// copy of them, so the thread can be put back exactly.
	Regs linux.Regs
	// SyscallAddr is the address of a `syscall` instruction in the tracee.
	SyscallAddr uint64
	// Signals that arrived while the thread was held and were taken off its queue; they are
	// delivered again when it is let go.
	Caught []int
	// Children created by injected clone/fork calls, in order.
	NewChildren []int
	// WasStopped: the thread was in a job-control stop (SIGSTOP) when seized. It was woken
	// with SIGCONT to be worked on, and is stopped again when let go. StopSig is the signal
	// that stopped it (SIGSTOP, SIGTSTP, SIGTTIN or SIGTTOU; 0: not known).
	WasStopped bool
	StopSig    int

	affinity *linux.CPUSet // the mask to put back after Pin
	// safe, when set, is where injected syscalls run from: SafeReturnCode, with the stack
	// pointer on a signal frame of the thread's own state (SetSafeReturn).
	safe *safeReturn
}

type safeReturn struct{ rip, rsp uint64 }

// SetSafeReturn makes the following injected syscalls run from code (linux.SafeReturnCode,
// written in the tracee) with the stack pointer at frame+8, frame holding linux.Sigframe of
// the thread's parked state: should the tracer die in the middle of a call, the thread goes
// on to rt_sigreturn and is itself again, instead of running on with the call's registers.
// ClearSafeReturn goes back to the `syscall` at SyscallAddr.
func (t *Tracee) SetSafeReturn(code, frame uint64) { t.safe = &safeReturn{code, frame + 8} }

// ArmSafeReturn writes at frame (64-byte aligned, linux.SigframeSize(len(xstate)) bytes) a
// signal frame of the thread's parked state (registers, signal mask, sigaltstack, asked with
// one injected call using buf, and xstate as PTRACE_GETREGSET gave it), and has the following
// calls run from code, where linux.SafeReturnCode is. A thread running on its sigaltstack
// (inside a handler) is left calling from SyscallAddr: rt_sigreturn would refuse its altstack.
func (t *Tracee) ArmSafeReturn(code, frame, buf uint64, xstate []byte) error {
	alt, err := t.altstack(buf)
	if err != nil || alt.Flags&linux.SSOnstack != 0 {
		return err
	}
	if err := t.writeFrame(frame, 0, alt, xstate); err != nil {
		return err
	}
	t.SetSafeReturn(code, frame)
	return nil
}

// Gadgets are instructions of a process's own code that a safe return chains without any
// code of gocr's: `syscall; ret`, and `mov $15, %rax; syscall` (libc's __restore_rt, Go's
// sigreturn).
type Gadgets struct{ SyscallRet, Sigreturn uint64 }

// FindGadgets looks for Gadgets in the given executable ranges of the tracee.
func (t *Tracee) FindGadgets(ranges [][2]uint64) (Gadgets, bool) {
	var g Gadgets
	for _, r := range ranges {
		if r[1]-r[0] > 64<<20 {
			continue
		}
		buf := make([]byte, r[1]-r[0])
		if t.ReadMem(r[0], buf) != nil {
			continue
		}
		if i := bytes.Index(buf, []byte{0x0f, 0x05, 0xc3}); g.SyscallRet == 0 && i >= 0 {
			g.SyscallRet = r[0] + uint64(i)
		}
		if i := bytes.Index(buf, []byte{0x48, 0xc7, 0xc0, byte(linux.SysRtSigreturn), 0, 0, 0, 0x0f, 0x05}); g.Sigreturn == 0 && i >= 0 {
			g.Sigreturn = r[0] + uint64(i)
		}
		if g.SyscallRet != 0 && g.Sigreturn != 0 {
			return g, true
		}
	}
	return g, false
}

// ArmOnStack puts a signal frame of the thread's parked state on its own stack, below the
// red zone, as the kernel does for a signal, and has every following call run from the
// process's own `syscall; ret`, which returns into its own sigreturn with that frame: should
// the tracer die at any point, the thread finishes the call and is itself again. From the
// first call on (the one asking its sigaltstack) no call of gocr's can hurt the thread. It
// fails, leaving nothing armed, where the stack has no room.
func (t *Tracee) ArmOnStack(g Gadgets, xstate []byte) error {
	size := uint64(linux.SigframeSize(len(xstate)))
	frame := (t.Regs.Rsp - 128 - size) &^ 63
	buf := frame - 64
	// Until the sigaltstack is known, the frame says none: only a thread that has one and
	// whose gocr dies in this very call would lose it.
	if err := t.writeFrame(frame, g.Sigreturn, linux.StackT{Flags: linux.SSDisable}, xstate); err != nil {
		return err
	}
	t.safe = &safeReturn{g.SyscallRet, frame}
	alt, err := t.altstack(buf)
	if err == nil && alt.Flags&linux.SSOnstack != 0 {
		err = fmt.Errorf("on its sigaltstack")
	}
	if err == nil {
		err = t.writeFrame(frame, g.Sigreturn, alt, xstate)
	}
	if err != nil {
		t.safe = nil
	}
	return err
}

func (t *Tracee) altstack(buf uint64) (linux.StackT, error) {
	b := make([]byte, 24)
	if _, err := t.Syscall(linux.SysSigaltstack, 0, buf); err != nil {
		return linux.StackT{}, fmt.Errorf("read sigaltstack: %w", err)
	}
	if err := t.ReadMem(buf, b); err != nil {
		return linux.StackT{}, err
	}
	return linux.StackT{Sp: binary.LittleEndian.Uint64(b[0:]), Flags: int32(binary.LittleEndian.Uint32(b[8:])), Size: binary.LittleEndian.Uint64(b[16:])}, nil
}

func (t *Tracee) writeFrame(frame, pretcode uint64, alt linux.StackT, xstate []byte) error {
	mask, err := linux.GetSigMask(t.Pid)
	if err != nil {
		return err
	}
	regs := t.Parked()
	return t.WriteMem(frame, linux.Sigframe(frame, pretcode, &regs, mask, alt, xstate))
}

// Armed says whether the thread's calls run from a safe return.
func (t *Tracee) Armed() bool { return t.safe != nil }

// ClearSafeReturn undoes SetSafeReturn (before the memory holding the code goes).
func (t *Tracee) ClearSafeReturn() { t.safe = nil }

// Parked is the register set the thread is left with between injected calls: its own, with
// an interrupted syscall set to restart (see NormalizeRestart).
func (t *Tracee) Parked() linux.Regs {
	r := t.Regs
	NormalizeRestart(&r, true)
	return r
}

// Pin moves the tracee onto cpu (see Thread.Pin) until Unpin.
func (t *Tracee) Pin(cpu int) error {
	old, err := linux.GetAffinity(t.Pid)
	if err != nil {
		return err
	}
	if err := linux.SetAffinity(t.Pid, linux.OneCPU(cpu)); err != nil {
		return err
	}
	t.affinity = &old
	return nil
}

// Unpin puts back the CPU mask the tracee had before Pin.
func (t *Tracee) Unpin() error {
	if t.affinity == nil {
		return nil
	}
	err := linux.SetAffinity(t.Pid, *t.affinity)
	t.affinity = nil
	return err
}

const ptraceSysGood = 0x80

// SeizeOptions are set on every thread the dumper seizes.
const SeizeOptions = linux.OptTraceSysGood | linux.OptSuspendSeccomp

// Seize attaches to pid and stops it with PTRACE_INTERRUPT, waiting for the stop. A signal
// that arrives first is delivered (the handler frame is set up) before the stop. A thread in
// a job-control stop is woken with SIGCONT first: a group-stopped tracee cannot run the
// syscalls injected into it; Release stops it again.
func Seize(pid int, stopped bool) (*Tracee, error) {
	if err := linux.Seize(pid, SeizeOptions); err != nil {
		return nil, err
	}
	t := &Tracee{Pid: pid, WasStopped: stopped}
	trapped := false
	if stopped {
		// PTRACE_SEIZE of a stopped thread returns once it is in a trap that reports its
		// group stop, with the signal that stopped it: take it now, before SIGCONT ends the
		// group stop. (Nothing to take: it was continued meanwhile; the loop below waits.)
		// (TrapCause is only for SIGTRAP stops: the event is read from the status itself.)
		if wpid, ws, err := linux.Wait4(pid, linux.WNOHANG); err == nil && wpid == pid && ws.Stopped() && int(ws>>16)&0xff == linux.EventStop {
			trapped = true
			if sig := int(ws.StopSignal()); sig == linux.SIGSTOP || sig == linux.SIGTSTP || sig == linux.SIGTTIN || sig == linux.SIGTTOU {
				t.StopSig = sig
			}
		}
		if err := linux.Kill(pid, linux.SIGCONT); err != nil {
			_ = linux.Detach(pid, 0)
			return nil, err
		}
	}
	if err := linux.Interrupt(pid); err != nil {
		_ = linux.Detach(pid, 0)
		return nil, err
	}
	for !trapped {
		_, ws, err := linux.Wait4(pid, 0)
		if err != nil {
			_ = linux.Detach(pid, 0)
			return nil, err
		}
		if ws.Exited() || ws.Signaled() {
			return nil, ErrExited
		}
		if !ws.Stopped() {
			continue
		}
		if ws.TrapCause() == linux.EventStop {
			// Our interrupt, or a group stop (SIGSTOP, SIGTSTP...): the thread is stopped.
			break
		}
		// A signal-delivery-stop: let the signal be delivered, our interrupt stays pending;
		// but not the SIGCONT sent here to wake a stopped thread.
		sig := int(ws.StopSignal())
		if stopped && sig == linux.SIGCONT {
			sig = 0
		}
		if err := linux.Cont(pid, sig); err != nil {
			return nil, err
		}
	}
	regs, err := linux.GetRegs(pid)
	if err != nil {
		_ = linux.Detach(pid, 0)
		return nil, err
	}
	t.Regs = regs
	return t, nil
}

// Adopt takes a tracee that is already stopped (a traced child after exec or fork).
func Adopt(pid int) (*Tracee, error) {
	regs, err := linux.GetRegs(pid)
	if err != nil {
		return nil, err
	}
	return &Tracee{Pid: pid, Regs: regs}, nil
}

// WaitStopped waits until pid reports a stop (a new traced child's first stop), returning
// ErrExited if it died instead.
func WaitStopped(pid int) error {
	for {
		_, ws, err := linux.Wait4(pid, 0)
		if err != nil {
			return err
		}
		if ws.Exited() || ws.Signaled() {
			return ErrExited
		}
		if ws.Stopped() {
			return nil
		}
	}
}

// Syscall runs syscall nr with args inside the tracee, from the `syscall` instruction at
// SyscallAddr, and returns its result. A negative errno result is returned as linux.Errno.
func (t *Tracee) Syscall(nr int, args ...uint64) (uint64, error) {
	var a [6]uint64
	copy(a[:], args)
	r := t.Regs
	r.Rax = uint64(nr)
	r.Orig_rax = ^uint64(0) // no restart handling for our frame
	r.Rip = t.SyscallAddr
	if t.safe != nil {
		r.Rip, r.Rsp = t.safe.rip, t.safe.rsp
	}
	r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	if r.Rip == 0 {
		return 0, ErrNoSyscallInsn
	}
	// Every signal is blocked for the length of the call, so that none is delivered inside
	// it; the thread's own mask is put back before its registers. In this order a tracer
	// that dies at any point leaves, with a safe return, a thread whose next step is the
	// call and rt_sigreturn (mask and registers its own again), or the thread itself.
	mask, err := linux.GetSigMask(t.Pid)
	if err != nil {
		return 0, err
	}
	if err := linux.SetRegs(t.Pid, &r); err != nil {
		return 0, err
	}
	if mask != ^uint64(0) {
		if err := linux.SetSigMask(t.Pid, ^uint64(0)); err != nil {
			return 0, err
		}
	}
	for stop := 0; stop < 2; stop++ { // syscall entry, then exit
		if err := linux.ContSyscall(t.Pid, 0); err != nil {
			return 0, err
		}
		if err := t.waitSyscallStop(); err != nil {
			return 0, err
		}
	}
	out, err := linux.GetRegs(t.Pid)
	if err != nil {
		return 0, err
	}
	if mask != ^uint64(0) {
		if err := linux.SetSigMask(t.Pid, mask); err != nil {
			return 0, err
		}
	}
	// Park the thread on its own registers between calls: if gocr dies now, the thread goes on
	// where it was (its interrupted syscall restarted), never in gocr's instruction with gocr's
	// arguments.
	parked := t.Parked()
	if err := linux.SetRegs(t.Pid, &parked); err != nil {
		return 0, err
	}
	if v := int64(out.Rax); v < 0 && v >= -4095 {
		return 0, linux.Errno(-v)
	}
	return out.Rax, nil
}

func (t *Tracee) waitSyscallStop() error {
	for other := 0; ; other++ {
		if other > 10000 {
			return fmt.Errorf("pid %d: stops again and again instead of running the injected syscall", t.Pid)
		}
		_, ws, err := linux.Wait4(t.Pid, 0)
		if err != nil {
			return err
		}
		if ws.Exited() || ws.Signaled() {
			return ErrExited
		}
		if !ws.Stopped() {
			continue
		}
		sig := int(ws.StopSignal())
		if sig == linux.SIGTRAP|ptraceSysGood {
			return nil
		}
		switch ws.TrapCause() {
		case linux.EventFork, linux.EventVfork, linux.EventClone:
			child, err := linux.GetEventMsg(t.Pid)
			if err != nil {
				return err
			}
			t.NewChildren = append(t.NewChildren, int(child))
		case 0, -1:
			switch sig {
			case linux.SIGSEGV, linux.SIGBUS, linux.SIGILL, linux.SIGFPE:
				// Our own instruction faulted: going on would fault again forever.
				return fmt.Errorf("injected syscall at %#x: signal %d: %w", t.SyscallAddr, sig, ErrFault)
			case linux.SIGTRAP:
			case linux.SIGCONT:
				if !t.WasStopped { // ours, when it was
					t.Caught = append(t.Caught, sig)
				}
			default:
				t.Caught = append(t.Caught, sig)
			}
		}
		if err := linux.ContSyscall(t.Pid, 0); err != nil {
			return err
		}
	}
}

// Restart codes a syscall interrupted by a stop leaves in rax (linux/errno.h, kernel-only).
const (
	errRestartSys       = 512
	errRestartNoIntr    = 513
	errRestartNoHand    = 514
	errRestartRestartBl = 516
	eintr               = 4
)

// NormalizeRestart rewrites registers taken in the middle of an interrupted syscall so that
// setting them from any stop restarts the syscall as the kernel would have. The kernel's
// restart_block belongs to the thread, so a thread that is not the same one (a restore)
// gets EINTR where the kernel would have used restart_syscall, as CRIU does.
func NormalizeRestart(r *linux.Regs, sameThread bool) {
	if int64(r.Orig_rax) >= 0 {
		switch -int64(r.Rax) {
		case errRestartSys, errRestartNoIntr, errRestartNoHand:
			r.Rax = r.Orig_rax
			r.Rip -= 2
		case errRestartRestartBl:
			if sameThread {
				r.Rax = linux.SysRestartSyscall
				r.Rip -= 2
			} else {
				r.Rax = ^uint64(eintr - 1) // -EINTR
			}
		}
	}
	r.Orig_rax = ^uint64(0)
}

// SetFinal puts back regs (restart emulated) and the signal mask, as the thread is to run on.
//
// A thread whose registers restart an interrupted syscall is first run up to that syscall's
// entry, still traced, and only there let go. Otherwise a signal that arrives between the
// release and the restart would run its handler first, and the thread would then sleep in
// the restarted syscall: a pause() would miss the very signal meant to end it. From the entry
// on, a signal interrupts the syscall as it would have the original. A thread given a new
// mask (a restore) runs there with every signal blocked, and gets its mask at the entry.
func (t *Tracee) SetFinal(regs linux.Regs, mask uint64, sameThread bool) error {
	rip := regs.Rip
	NormalizeRestart(&regs, sameThread)
	restart := regs.Rip != rip
	// A thread that has its own mask already (a dump letting its tree go) is not blocked: a
	// signal on its way to the syscall stops it in ptrace first and is delivered by the detach
	// (Caught), and a gocr that dies meanwhile leaves it with its own mask.
	cur, err := linux.GetSigMask(t.Pid)
	setMask := err != nil || cur != mask
	if restart && setMask {
		if err := linux.SetSigMask(t.Pid, ^uint64(0)); err != nil {
			return fmt.Errorf("pid %d: block signals: %w", t.Pid, err)
		}
	}
	if err := linux.SetRegs(t.Pid, &regs); err != nil {
		return fmt.Errorf("pid %d: put registers back: %w", t.Pid, err)
	}
	if restart {
		if err := linux.ContSyscall(t.Pid, 0); err != nil {
			return fmt.Errorf("pid %d: restart its syscall: %w", t.Pid, err)
		}
		if err := t.waitSyscallStop(); err != nil {
			return fmt.Errorf("pid %d: restart its syscall: %w", t.Pid, err)
		}
	}
	if setMask {
		if err := linux.SetSigMask(t.Pid, mask); err != nil {
			return fmt.Errorf("pid %d: set signal mask: %w", t.Pid, err)
		}
	}
	return nil
}

// Release puts back regs and mask (see SetFinal) and detaches, delivering a signal that
// arrived while the thread was held. With stop set the thread is left in a group stop.
func (t *Tracee) Release(regs linux.Regs, mask uint64, sameThread, stop bool) error {
	if err := t.SetFinal(regs, mask, sameThread); err != nil {
		return err
	}
	sig := 0
	if len(t.Caught) > 0 {
		sig = t.Caught[0]
		// More than one signal taken off its queue: the others go back on it (the thread is
		// stopped: they wait there), the first comes with the detach.
		for _, s := range t.Caught[1:] {
			linux.Tkill(t.Pid, s)
		}
	}
	if stop || t.WasStopped {
		stopSig := linux.SIGSTOP
		if t.WasStopped && !stop {
			stopSig = procfs.StopSignal(t.Pid, t.StopSig)
		}
		if err := linux.Kill(t.Pid, stopSig); err != nil {
			return err
		}
	}
	return linux.Detach(t.Pid, sig)
}

// ReadMem reads len(buf) bytes at addr from the tracee.
func (t *Tracee) ReadMem(addr uint64, buf []byte) error {
	n, err := linux.ProcessVMReadv(t.Pid, buf, addr)
	if err != nil {
		return fmt.Errorf("read memory at %#x: %w", addr, err)
	}
	if n != len(buf) {
		return fmt.Errorf("read memory at %#x: short read %d of %d", addr, n, len(buf))
	}
	return nil
}

// WriteMem writes buf at addr in the tracee.
func (t *Tracee) WriteMem(addr uint64, buf []byte) error {
	n, err := linux.ProcessVMWritev(t.Pid, buf, addr)
	if err != nil {
		return fmt.Errorf("write memory at %#x: %w", addr, err)
	}
	if n != len(buf) {
		return fmt.Errorf("write memory at %#x: short write %d of %d", addr, n, len(buf))
	}
	return nil
}

// FindSyscallInsn finds a `syscall` instruction (0f 05) in the tracee's [vdso] at
// [start, end) and sets SyscallAddr to it.
func (t *Tracee) FindSyscallInsn(start, end uint64) error {
	buf := make([]byte, end-start)
	if err := t.ReadMem(start, buf); err != nil {
		return fmt.Errorf("read vdso: %w", err)
	}
	for i := 0; i+1 < len(buf); i++ {
		if buf[i] == 0x0f && buf[i+1] == 0x05 {
			t.SyscallAddr = start + uint64(i)
			return nil
		}
	}
	return ErrNoSyscallInsn
}
