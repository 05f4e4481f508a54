package core

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/procfs"
	"github.com/gocr/gocr/core/internal/tracer"
)

// restoreState puts back the rest of the per-process state: cwd, root, umask, limits,
// signal actions, timers, futex and rseq registrations, name, credentials, pending signals.
func (r *restorer) restoreState(p *procRestore) error {
	img, pid := p.img, p.t.Pid
	path := func(s string) (uint64, error) { return p.arg(scratchArg, cstring(s)) }
	// The working directory first: /proc gives its path from gocr's root, not the chroot's.
	a, err := path(img.Cwd)
	if err != nil {
		return err
	}
	if _, err := r.call(p, "chdir "+img.Cwd, linux.SysChdir, a); err != nil {
		return err
	}
	if img.Root != "/" {
		a, err := path(img.Root)
		if err != nil {
			return err
		}
		if _, err := r.call(p, "chroot "+img.Root, linux.SysChroot, a); err != nil {
			return err
		}
	}
	if _, err := r.call(p, "umask", linux.SysUmask, uint64(img.Umask)); err != nil {
		return err
	}
	if err := r.restoreLimits(p); err != nil {
		return err
	}
	if err := r.restoreSignals(p); err != nil {
		return err
	}
	for _, it := range img.Itimers {
		// A periodic timer whose signal was pending at the dump reads as 0 left (the kernel
		// re-arms it when the signal is taken): arm it to fire at once, or it would stop.
		value := it.ValueUsec
		if value == 0 && it.IntervalUsec != 0 {
			value = 1
		}
		v := le64bytes(uint64(it.IntervalUsec/1e6), uint64(it.IntervalUsec%1e6), uint64(value/1e6), uint64(value%1e6))
		a, err := p.arg(scratchArg, v)
		if err != nil {
			return err
		}
		if _, err := r.call(p, fmt.Sprintf("set itimer %d", it.Which), linux.SysSetitimer, uint64(it.Which), a, 0); err != nil {
			return err
		}
	}
	if _, err := r.call(p, "set_tid_address", linux.SysSetTidAddress, img.TidAddress); err != nil {
		return err
	}
	if img.RobustList != 0 {
		if _, err := r.call(p, "set_robust_list", linux.SysSetRobustList, img.RobustList, img.RobustListLen); err != nil {
			return err
		}
	}
	if rs := img.Rseq; rs != nil {
		if _, err := r.call(p, "register rseq", linux.SysRseq, rs.AbiPointer, uint64(rs.AbiSize), 0, uint64(rs.Signature)); err != nil {
			return err
		}
	}
	if img.Personality != 0 {
		if _, err := r.call(p, "personality", linux.SysPersonality, uint64(img.Personality)); err != nil {
			return err
		}
	}
	if img.Pdeathsig != 0 {
		if _, err := r.call(p, "set parent death signal", linux.SysPrctl, linux.PrSetPdeathsig, uint64(img.Pdeathsig)); err != nil {
			return err
		}
	}
	comm := []byte(img.Comm)
	if len(comm) > 15 {
		comm = comm[:15]
	}
	if a, err = path(string(comm)); err != nil {
		return err
	}
	if _, err := r.call(p, "set name", linux.SysPrctl, linux.PrSetName, a); err != nil {
		return err
	}
	if img.ChildSubreaper {
		if _, err := r.call(p, "become a child subreaper", linux.SysPrctl, linux.PrSetChildSubreaper, 1); err != nil {
			return err
		}
	}
	if img.ThpDisable&1 != 0 {
		if _, err := r.call(p, "disable transparent huge pages", linux.SysPrctl, linux.PrSetTHPDisable, 1, uint64(img.ThpDisable&^1)); err != nil {
			return err
		}
	}
	if img.Creds.NoNewPrivs {
		if _, err := r.call(p, "set no_new_privs", linux.SysPrctl, linux.PrSetNoNewPrivs, 1, 0, 0, 0); err != nil {
			return err
		}
	}
	if err := r.restoreProcessAttrs(p); err != nil {
		return err
	}
	// Threads are made now, while the main thread may still use clone3 with set_tid; each
	// then takes the credentials itself (they are per thread).
	if err := r.createThreads(p); err != nil {
		return err
	}
	if err := r.restoreTimers(p); err != nil {
		return err
	}
	// Seccomp filters: the threads made above have them already if they were made after
	// them, so install them before the credentials change, in the order they were.
	if err := r.restoreSeccomp(p); err != nil {
		return err
	}
	if err := r.restoreCreds(p, p.img.Creds); err != nil {
		return err
	}
	for _, th := range p.threads {
		c := p.img.Creds
		if th.img.Creds != nil {
			c = th.img.Creds // its own
		}
		if err := r.restoreCreds(th.view(p), c); err != nil {
			return fmt.Errorf("thread %d: %w", th.img.Tid, err)
		}
		if err := r.queueThreadSignals(p, th); err != nil {
			return fmt.Errorf("thread %d: %w", th.img.Tid, err)
		}
	}
	// Changing the credentials reset the dumpable flag; put the dumped one back.
	if img.Dumpable == 0 || img.Dumpable == 1 {
		if _, err := r.call(p, "set dumpable", linux.SysPrctl, linux.PrSetDumpable, uint64(img.Dumpable)); err != nil {
			return err
		}
	}
	// Pending signals last, with every signal blocked: they stay queued until the real mask
	// is set and the process runs.
	for _, s := range img.Pending {
		a, err := p.arg(scratchArg, s.Info)
		if err != nil {
			return err
		}
		if s.Shared {
			_, err = r.call(p, fmt.Sprintf("queue signal %d", s.Signo), linux.SysRtSigqueueinfo, uint64(pid), uint64(s.Signo), a)
		} else {
			_, err = r.call(p, fmt.Sprintf("queue signal %d", s.Signo), linux.SysRtTgsigqueue, uint64(pid), uint64(pid), uint64(s.Signo), a)
		}
		if err != nil {
			return err
		}
	}
	if err := r.takePosixLocks(p); err != nil {
		return err
	}
	if _, err := r.call(p, "close pidfd", linux.SysClose, p.pidfd); err != nil {
		return err
	}
	p.pidfd = ^uint64(0)
	if _, err := r.call(p, "unmap scratch area", linux.SysMunmap, p.scratch, scratchSize); err != nil {
		return err
	}
	return nil
}

// restoreTimers makes the POSIX timers again under their IDs (PR_TIMER_CREATE_RESTORE_IDS),
// armed with the time they had left; after the threads, which a timer may notify.
func (r *restorer) restoreTimers(p *procRestore) error {
	if len(p.img.PosixTimers) == 0 {
		return nil
	}
	if _, err := r.call(p, "allow timer IDs (PR_TIMER_CREATE_RESTORE_IDS, Linux 6.17)", linux.SysPrctl, linux.PrTimerCreateRestoreIDs, 1, 0, 0, 0); err != nil {
		return err
	}
	for _, pt := range p.img.PosixTimers {
		// struct sigevent: sigev_value, sigev_signo, sigev_notify, then the union with _tid.
		ev := make([]byte, 72)
		binary.LittleEndian.PutUint64(ev[0:], pt.SigevValue)
		binary.LittleEndian.PutUint32(ev[8:], uint32(pt.Signo))
		binary.LittleEndian.PutUint32(ev[12:], uint32(pt.Notify))
		binary.LittleEndian.PutUint32(ev[16:], uint32(pt.NotifyTid))
		binary.LittleEndian.PutUint32(ev[64:], uint32(pt.Id)) // the ID asked for
		a, err := p.arg(scratchArg, ev)
		if err != nil {
			return err
		}
		if _, err := r.call(p, fmt.Sprintf("make POSIX timer %d", pt.Id), linux.SysTimerCreate, uint64(pt.Clockid), a, a+64); err != nil {
			return err
		}
		got := make([]byte, 4)
		if err := p.t.ReadMem(a+64, got); err != nil {
			return err
		}
		if id := int32(binary.LittleEndian.Uint32(got)); id != pt.Id {
			return fmt.Errorf("POSIX timer %d came back as %d", pt.Id, id)
		}
		value := pt.ValueNs
		if value == 0 && pt.IntervalNs != 0 {
			value = 1 // pending at the dump: see the interval timers in restoreState
		}
		its := le64bytes(uint64(pt.IntervalNs/1e9), uint64(pt.IntervalNs%1e9), uint64(value/1e9), uint64(value%1e9))
		if a, err = p.arg(scratchArg, its); err != nil {
			return err
		}
		if _, err := r.call(p, fmt.Sprintf("arm POSIX timer %d", pt.Id), linux.SysTimerSettime, uint64(pt.Id), 0, a, 0); err != nil {
			return err
		}
	}
	_, err := r.call(p, "stop choosing timer IDs", linux.SysPrctl, linux.PrTimerCreateRestoreIDs, 0, 0, 0, 0)
	return err
}

// restoreSeccomp installs the process's seccomp filters, oldest first. The tracee keeps
// running injected syscalls: PTRACE_O_SUSPEND_SECCOMP is set on it.
func (r *restorer) restoreSeccomp(p *procRestore) error {
	targets := []*procRestore{p}
	for _, th := range p.threads {
		targets = append(targets, th.view(p))
	}
	for _, prog := range p.img.SeccompFilters {
		if len(prog) == 0 || len(prog)%8 != 0 || len(prog) > scratchSize-scratchProg-16 {
			return fmt.Errorf("seccomp filter of %d bytes", len(prog))
		}
		// Each thread has its filters; all of the process's threads had these.
		for _, t := range targets {
			if err := t.t.WriteMem(t.scratch+scratchProg+16, prog); err != nil {
				return err
			}
			// struct sock_fprog: u16 len, pad, then the filter pointer.
			fprog := make([]byte, 16)
			binary.LittleEndian.PutUint16(fprog, uint16(len(prog)/8))
			binary.LittleEndian.PutUint64(fprog[8:], t.scratch+scratchProg+16)
			if err := t.t.WriteMem(t.scratch+scratchProg, fprog); err != nil {
				return err
			}
			if _, err := r.call(t, "install seccomp filter", linux.SysSeccomp, linux.SeccompSetModeFilter, 0, t.scratch+scratchProg); err != nil {
				return err
			}
		}
	}
	return nil
}

// threadRestore is a thread other than the main one.
type threadRestore struct {
	img *imagepb.Thread
	t   *tracer.Tracee
}

// view lets the per-process helpers (call, arg) act on the thread.
func (th *threadRestore) view(p *procRestore) *procRestore {
	return &procRestore{img: p.img, entry: p.entry, t: th.t, scratch: p.scratch, pidfd: ^uint64(0)}
}

// Clone flags of a thread as pthread_create makes it (linux/sched.h).
const cloneThreadFlags = 0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x40000 // VM FS FILES SIGHAND THREAD SYSVSEM

// createThreads makes every other thread with its old TID by clone3 run in the main thread,
// and gives each its own state: tid address, robust list, rseq, sigaltstack, name.
func (r *restorer) createThreads(p *procRestore) error {
	for _, ti := range p.img.Threads {
		tid := ti.Tid
		setTid := p.scratch + scratchArg + 128
		args := cloneArgs{Flags: cloneThreadFlags, SetTid: setTid, SetTidSize: 1}
		if err := p.t.WriteMem(p.scratch+scratchArg, structBytes(&args)); err != nil {
			return err
		}
		if err := p.t.WriteMem(setTid, le32bytes(uint32(tid))); err != nil {
			return err
		}
		p.t.NewChildren = nil
		got, err := r.call(p, fmt.Sprintf("make thread %d", tid), linux.SysClone3, p.scratch+scratchArg, uint64(unsafeSizeofCloneArgs))
		if errors.Is(err, linux.EEXIST) {
			return fmt.Errorf("thread %d: %w", tid, ErrPidInUse)
		}
		if err != nil {
			return err
		}
		if int32(got) != tid {
			return fmt.Errorf("thread %d: clone3 made %d", tid, got)
		}
		if len(p.t.NewChildren) != 1 {
			return fmt.Errorf("thread %d: clone3 reported %d new threads", tid, len(p.t.NewChildren))
		}
		host := p.t.NewChildren[0] // its tid as gocr sees it
		if err := tracer.WaitStopped(host); err != nil {
			return fmt.Errorf("thread %d: %w", tid, err)
		}
		r.setHost(tid, host)
		t, err := tracer.Adopt(host)
		if err != nil {
			return fmt.Errorf("thread %d: %w", tid, err)
		}
		t.SyscallAddr = p.t.SyscallAddr
		th := &threadRestore{img: ti, t: t}
		p.threads = append(p.threads, th)
		if err := r.threadState(p, th); err != nil {
			return fmt.Errorf("thread %d: %w", tid, err)
		}
	}
	return nil
}

func (r *restorer) threadState(p *procRestore, th *threadRestore) error {
	v, img := th.view(p), th.img
	if _, err := r.call(v, "set_tid_address", linux.SysSetTidAddress, img.TidAddress); err != nil {
		return err
	}
	if img.RobustList != 0 {
		if _, err := r.call(v, "set_robust_list", linux.SysSetRobustList, img.RobustList, img.RobustListLen); err != nil {
			return err
		}
	}
	if rs := img.Rseq; rs != nil {
		if _, err := r.call(v, "register rseq", linux.SysRseq, rs.AbiPointer, uint64(rs.AbiSize), 0, uint64(rs.Signature)); err != nil {
			return err
		}
	}
	if as := img.Altstack; as != nil && as.Sp != 0 {
		a, err := v.arg(scratchArg, le64bytes(as.Sp, uint64(uint32(as.Flags)), as.Size))
		if err != nil {
			return err
		}
		if _, err := r.call(v, "set sigaltstack", linux.SysSigaltstack, a, 0); err != nil {
			return err
		}
	}
	comm := img.Comm
	if len(comm) > 15 {
		comm = comm[:15]
	}
	a, err := v.arg(scratchArg, cstring(comm))
	if err != nil {
		return err
	}
	_, err = r.call(v, "set name", linux.SysPrctl, linux.PrSetName, a)
	return err
}

// queueThreadSignals queues the signals directed at one thread, from that thread: the kernel
// lets a thread queue a signal with any si_code only to itself.
func (r *restorer) queueThreadSignals(p *procRestore, th *threadRestore) error {
	v := th.view(p)
	for _, s := range th.img.Pending {
		a, err := v.arg(scratchArg, s.Info)
		if err != nil {
			return err
		}
		if _, err := r.call(v, fmt.Sprintf("queue signal %d", s.Signo), linux.SysRtTgsigqueue, uint64(p.entry.Pid), uint64(th.img.Tid), uint64(s.Signo), a); err != nil {
			return err
		}
	}
	return nil
}

func (r *restorer) restoreLimits(p *procRestore) error {
	cur, err := procfs.ReadLimits(p.t.Pid)
	if err != nil {
		return err
	}
	for _, l := range p.img.Rlimits {
		c := cur[l.Resource]
		if c.Cur == l.Cur && c.Max == l.Max {
			continue
		}
		a, err := p.arg(scratchArg, le64bytes(l.Cur, l.Max))
		if err != nil {
			return err
		}
		if _, err := r.call(p, "set rlimit "+limitName(int(l.Resource)), linux.SysPrlimit64, 0, uint64(l.Resource), a, 0); err != nil {
			if errors.Is(err, linux.EPERM) && l.Max > c.Max {
				return fmt.Errorf("rlimit %s: hard limit %d is above gocr's %d and raising it needs CAP_SYS_RESOURCE: %w", limitName(int(l.Resource)), l.Max, c.Max, ErrPermission)
			}
			return err
		}
	}
	return nil
}

func limitName(res int) string {
	names := []string{"CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE", "MEMLOCK", "AS", "LOCKS", "SIGPENDING", "MSGQUEUE", "NICE", "RTPRIO", "RTTIME"}
	if res >= 0 && res < len(names) {
		return "RLIMIT_" + names[res]
	}
	return fmt.Sprint(res)
}

func (r *restorer) restoreSignals(p *procRestore) error {
	set := map[int32]bool{}
	for _, sa := range p.img.Sigactions {
		set[sa.Signo] = true
		a, err := p.arg(scratchArg, le64bytes(sa.Handler, sa.Flags, sa.Restorer, sa.Mask))
		if err != nil {
			return err
		}
		if _, err := r.call(p, fmt.Sprintf("set action of signal %d", sa.Signo), linux.SysRtSigaction, uint64(sa.Signo), a, 0, 8); err != nil {
			return err
		}
	}
	// Signals the stub ignored (exec keeps SIG_IGN) but the process did not.
	st, err := procfs.ReadStatus(p.t.Pid)
	if err != nil {
		return err
	}
	for sig := int32(1); sig <= 64; sig++ {
		if st.SigIgn&(1<<(sig-1)) == 0 || set[sig] {
			continue
		}
		a, err := p.arg(scratchArg, le64bytes(0, 0, 0, 0))
		if err != nil {
			return err
		}
		if _, err := r.call(p, fmt.Sprintf("reset action of signal %d", sig), linux.SysRtSigaction, uint64(sig), a, 0, 8); err != nil {
			return err
		}
	}
	if as := p.img.Altstack; as != nil && as.Sp != 0 {
		b := le64bytes(as.Sp, uint64(uint32(as.Flags)), as.Size)
		a, err := p.arg(scratchArg, b)
		if err != nil {
			return err
		}
		if _, err := r.call(p, "set sigaltstack", linux.SysSigaltstack, a, 0); err != nil {
			return err
		}
	}
	return nil
}

// restoreProcessAttrs sets what /proc and membarrier(2) tell of the process: its OOM score
// adjustment, audit login uid (while it may still set it) and membarrier registrations.
func (r *restorer) restoreProcessAttrs(p *procRestore) error {
	img := p.img
	if now, err := procfs.ReadInt(p.host, "oom_score_adj"); err != nil || now != img.OomScoreAdj {
		err := os.WriteFile(procfs.Path(p.host, "oom_score_adj"), []byte(strconv.Itoa(int(img.OomScoreAdj))), 0)
		if errors.Is(err, linux.EACCES) {
			return fmt.Errorf("set oom_score_adj %d: lower than gocr's own needs CAP_SYS_RESOURCE: %w", img.OomScoreAdj, err)
		}
		if err != nil {
			return fmt.Errorf("set oom_score_adj %d: %w", img.OomScoreAdj, err)
		}
	}
	if img.HasLoginuid {
		// Only the process itself may write its loginuid.
		if now, err := procfs.ReadInt(p.host, "loginuid"); err != nil || uint32(now) != img.Loginuid {
			if err := r.writeOwnFile(p, "/proc/self/loginuid", strconv.FormatUint(uint64(img.Loginuid), 10)); err != nil {
				return fmt.Errorf("set audit login uid %d: %w", img.Loginuid, err)
			}
		}
	}
	for bit := uint32(1); bit != 0 && bit <= img.Membarrier; bit <<= 1 {
		if img.Membarrier&bit != 0 {
			if _, err := r.call(p, fmt.Sprintf("membarrier register %#x", bit), linux.SysMembarrier, uint64(bit), 0, 0); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeOwnFile has the process write s into the file at path.
func (r *restorer) writeOwnFile(p *procRestore, path, s string) error {
	a, err := p.arg(scratchArg, cstring(path))
	if err != nil {
		return err
	}
	fd, err := r.call(p, "open "+path, linux.SysOpenat, atFdcwd, a, linux.OWronly|linux.OCloexec, 0)
	if err != nil {
		return err
	}
	b, err := p.arg(scratchArg2, []byte(s))
	if err == nil {
		_, err = r.call(p, "write "+path, linux.SysWrite, fd, b, uint64(len(s)))
	}
	if _, cerr := r.call(p, "close "+path, linux.SysClose, fd); err == nil {
		err = cerr
	}
	return err
}

// restoreCreds gives the thread its ids, groups, capabilities and securebits. Changing the
// uid away from 0 clears the capabilities: where the image has others than what the change
// alone leaves, the bounding set is cut first, the permitted set kept across the change
// (PR_SET_KEEPCAPS), and the sets, ambient capabilities and securebits set after it.
func (r *restorer) restoreCreds(p *procRestore, c *imagepb.Creds) error {
	caps := r.capsDiffer(c)
	if caps {
		for cp := 0; cp <= r.own.lastCap; cp++ {
			if c.CapBnd&(1<<cp) == 0 && r.own.status.CapBnd&(1<<cp) != 0 {
				if _, err := r.call(p, fmt.Sprintf("drop capability %d from the bounding set", cp), linux.SysPrctl, linux.PrCapbsetDrop, uint64(cp)); err != nil {
					return err
				}
			}
		}
		if _, err := r.call(p, "keep capabilities", linux.SysPrctl, linux.PrSetKeepcaps, 1); err != nil {
			return err
		}
	}
	if len(c.Groups) > 0 || c.Gids[0] != 0 {
		b := make([]byte, 0, 4*len(c.Groups))
		for _, g := range c.Groups {
			b = binary.LittleEndian.AppendUint32(b, g)
		}
		a := p.scratch + scratchArg
		if len(b) > 0 {
			var err error
			if a, err = p.arg(scratchArg, b); err != nil {
				return err
			}
		}
		if _, err := r.call(p, "setgroups", linux.SysSetgroups, uint64(len(c.Groups)), a); err != nil {
			return err
		}
	}
	if c.Gids[0] != 0 || c.Gids[1] != 0 || c.Gids[2] != 0 {
		if _, err := r.call(p, "setresgid", linux.SysSetresgid, uint64(c.Gids[0]), uint64(c.Gids[1]), uint64(c.Gids[2])); err != nil {
			return err
		}
	}
	if c.Uids[0] != 0 || c.Uids[1] != 0 || c.Uids[2] != 0 {
		if _, err := r.call(p, "setresuid", linux.SysSetresuid, uint64(c.Uids[0]), uint64(c.Uids[1]), uint64(c.Uids[2])); err != nil {
			return err
		}
	}
	if !caps {
		return nil
	}
	// The permitted set is gocr's still; the effective one may be empty: raise it, so that
	// the ambient capabilities and securebits can be set, then set the image's sets.
	prm := r.own.status.CapPrm
	if err := r.capset(p, c.CapInh, prm, prm); err != nil {
		return err
	}
	for cp := 0; cp <= r.own.lastCap; cp++ {
		if c.CapAmb&(1<<cp) != 0 {
			if _, err := r.call(p, fmt.Sprintf("raise ambient capability %d", cp), linux.SysPrctl, linux.PrCapAmbient, linux.PrCapAmbientRaise, uint64(cp), 0, 0); err != nil {
				return err
			}
		}
	}
	if _, err := r.call(p, fmt.Sprintf("set securebits %#x", c.Securebits), linux.SysPrctl, linux.PrSetSecurebits, uint64(c.Securebits)); err != nil {
		return err
	}
	return r.capset(p, c.CapInh, c.CapPrm, c.CapEff)
}

// capset sets the thread's inheritable, permitted and effective capabilities.
func (r *restorer) capset(p *procRestore, inh, prm, eff uint64) error {
	// struct __user_cap_header_struct (version 3, pid 0: the caller), then two
	// struct __user_cap_data_struct {effective, permitted, inheritable}: low and high words.
	b := binary.LittleEndian.AppendUint32(nil, linux.CapabilityVersion3)
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, half := range []int{0, 32} {
		for _, v := range []uint64{eff, prm, inh} {
			b = binary.LittleEndian.AppendUint32(b, uint32(v>>half))
		}
	}
	a, err := p.arg(scratchArg, b)
	if err != nil {
		return err
	}
	_, err = r.call(p, fmt.Sprintf("set capabilities (permitted %#x, effective %#x, inheritable %#x)", prm, eff, inh), linux.SysCapset, a, a+8)
	return err
}

// capsDiffer says whether the image's capabilities or securebits differ from what a
// thread of gocr's, with the image's uids set, has.
func (r *restorer) capsDiffer(c *imagepb.Creds) bool {
	own := r.own.status
	inh, prm, eff, amb := own.CapInh, own.CapPrm, own.CapEff, own.CapAmb
	if c.Uids[0] != 0 && c.Uids[1] != 0 && c.Uids[2] != 0 {
		prm, eff, amb = 0, 0, 0
	} else if c.Uids[1] != 0 {
		eff = 0
	}
	return c.CapInh != inh || c.CapPrm != prm || c.CapEff != eff || c.CapAmb != amb || c.CapBnd != own.CapBnd || c.Securebits != 0
}

// finalRegs sets the dumped registers and XSTATE and the real signal mask. An interrupted
// syscall is restarted (or fails with EINTR where the kernel's restart block was needed).
func (r *restorer) finalRegs(p *procRestore) error {
	for _, th := range p.threads {
		if err := r.finalThreadRegs(th.t, th.img.Regs, th.img.Xstate, th.img.Sigmask, th.img.Sched); err != nil {
			return fmt.Errorf("thread %d: %w", th.t.Pid, err)
		}
	}
	return r.finalThreadRegs(p.t, p.img.Regs, p.img.Xstate, p.img.Sigmask, p.img.Sched)
}

func (r *restorer) finalThreadRegs(t *tracer.Tracee, ri *imagepb.Regs, xstate []byte, mask uint64, sched *imagepb.Sched) error {
	if err := linux.SetXState(t.Pid, xstate); err != nil {
		return err
	}
	if err := t.SetFinal(regsFromImage(ri), mask, false); err != nil {
		return err
	}
	return r.setSched(t.Pid, sched)
}

// setSched gives a thread its scheduling policy, nice value, priorities and CPU affinity back.
// Where none of the dumped CPUs is available here, it gets gocr's own.
func (r *restorer) setSched(tid int, s *imagepb.Sched) error {
	set := r.mask
	if s != nil {
		if a, ok := linux.CPUSetFromBytes(s.Affinity); ok && a.Count() > 0 {
			set = a
		}
	}
	if err := linux.SetAffinity(tid, set); err != nil {
		if err := linux.SetAffinity(tid, r.mask); err != nil {
			return err
		}
	}
	if s == nil {
		return nil
	}
	a := &linux.SchedAttr{
		Size: linux.SizeofSchedAttr, Policy: s.Policy, Nice: s.Nice, Priority: s.Priority,
		Runtime: s.Runtime, Deadline: s.Deadline, Period: s.Period,
	}
	if s.ResetOnFork {
		a.Flags = linux.SchedFlagResetFork
	}
	if err := linux.SetSchedAttr(tid, a); err != nil {
		return fmt.Errorf("set scheduling policy %d, nice %d, priority %d: %w", s.Policy, s.Nice, s.Priority, err)
	}
	if err := linux.SetNice(tid, int(s.Nice)); err != nil {
		return fmt.Errorf("set nice %d: %w", s.Nice, err)
	}
	return nil
}

// takePosixLocks has the process take its POSIX locks again. They belong to the process and
// go away when it closes any fd of the file, so this comes after every fd is in place.
func (r *restorer) takePosixLocks(p *procRestore) error {
	for _, l := range p.img.Locks {
		a, err := p.arg(scratchArg, linux.FlockBytes(l.Write, l.Start, l.End))
		if err != nil {
			return err
		}
		_, err = p.t.Syscall(linux.SysFcntl, uint64(l.Fd), linux.FSetlk, a)
		r.stats.Syscalls++
		if err != nil {
			f := r.fileByID(fileOfFd(p.img, l.Fd))
			return fmt.Errorf("fd %d: %w", l.Fd, lockError(f, l, r.files[f.Id], err))
		}
	}
	return nil
}

// makeRemovedDirs makes the removed working directories again at their paths, with the
// directories missing above them, before the processes chdir into them.
func (r *restorer) makeRemovedDirs() error {
	made := map[string]bool{}
	for _, p := range r.c.Procs {
		rd := p.CwdRemoved
		if rd == nil || made[p.Cwd] {
			continue
		}
		made[p.Cwd] = true
		if _, err := os.Lstat(p.Cwd); err == nil {
			return fmt.Errorf("the removed working directory %s exists again", p.Cwd)
		}
		dirs, err := makeMissingDirs(p.Cwd)
		if err != nil {
			return fmt.Errorf("make removed working directory %s: %w", p.Cwd, err)
		}
		r.removedDirs = append(dirs, r.removedDirs...)
		if err := os.Lchown(p.Cwd, int(rd.Uid), int(rd.Gid)); err != nil {
			return fmt.Errorf("make removed working directory %s: %w", p.Cwd, err)
		}
		if err := os.Chmod(p.Cwd, os.FileMode(rd.Mode&0o777)|unixModeBits(rd.Mode)); err != nil {
			return fmt.Errorf("make removed working directory %s: %w", p.Cwd, err)
		}
	}
	return nil
}

// unixModeBits turns the set-id and sticky bits of a mode into os.FileMode's.
func unixModeBits(mode uint32) os.FileMode {
	var m os.FileMode
	if mode&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}

// removeRemovedDirs removes what makeRemovedDirs made.
func (r *restorer) removeRemovedDirs() error {
	dirs := r.removedDirs
	r.removedDirs = nil
	if err := removeDirs(dirs); err != nil {
		return fmt.Errorf("restore: remove working directories again: %w", err)
	}
	return nil
}
