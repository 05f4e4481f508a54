package tracer

import (
	"errors"
	"fmt"

	"github.com/gocr/gocr/core/internal/linux"
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
	// with SIGCONT to be worked on, and is stopped again when let go.
	WasStopped bool

	affinity *linux.CPUSet // the mask to put back after Pin
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
	if stopped {
		if err := linux.Kill(pid, linux.SIGCONT); err != nil {
			_ = linux.Detach(pid, 0)
			return nil, err
		}
	}
	if err := linux.Interrupt(pid); err != nil {
		_ = linux.Detach(pid, 0)
		return nil, err
	}
	for {
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
	r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	if t.SyscallAddr == 0 {
		return 0, ErrNoSyscallInsn
	}
	if err := linux.SetRegs(t.Pid, &r); err != nil {
		return 0, err
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
// entry with every signal blocked, and only there given its mask. Otherwise a signal that
// arrives between the release and the restart would run its handler first, and the thread
// would then sleep in the restarted syscall: a pause() would miss the very signal meant to
// end it. From the entry on, a signal interrupts the syscall as it would have the original.
func (t *Tracee) SetFinal(regs linux.Regs, mask uint64, sameThread bool) error {
	rip := regs.Rip
	NormalizeRestart(&regs, sameThread)
	restart := regs.Rip != rip
	if restart {
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
	if err := linux.SetSigMask(t.Pid, mask); err != nil {
		return fmt.Errorf("pid %d: set signal mask: %w", t.Pid, err)
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
	}
	if stop || t.WasStopped {
		if err := linux.Kill(t.Pid, linux.SIGSTOP); err != nil {
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
