package core

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/procfs"
	"github.com/gocr/gocr/core/internal/tracer"
)

// collect reads one frozen process: registers and signals through ptrace, /proc, and what
// only the process can tell through injected syscalls. It runs on the tracer thread.
func (d *dumper) collect(p *procDump) error {
	pid := p.t.Pid
	if err := d.checkNamespaces(pid); err != nil {
		return err
	}
	if err := d.findOwnTracker(p); err != nil {
		return err
	}
	stat, err := procfs.ReadStat(pid)
	if err != nil {
		return fmt.Errorf("read stat: %w", err)
	}
	status, err := procfs.ReadStatus(pid)
	if err != nil {
		return fmt.Errorf("read status: %w", err)
	}
	if err := d.checkShellJob(pid, stat); err != nil {
		return err
	}
	exe, _ := procfs.Link(pid, "exe")
	p.img = &imagepb.Process{Pid: d.vpid(pid), Comm: stat.Comm, Umask: status.Umask, Regs: regsToImage(&p.t.Regs), Mm: &imagepb.MM{}}
	img := p.img
	if err := collectCgroups(pid, img); err != nil {
		return err
	}
	p.entry = &imagepb.ProcessEntry{
		Pid: d.vpid(pid), Ppid: d.vpid(stat.PPid), Pgid: d.vpid(stat.PGid), Sid: d.vpid(stat.Sid),
		Threads: []int32{d.vpid(pid)}, Comm: stat.Comm, Exe: exe, CttyRdev: stat.TtyNr, Tpgid: d.vpid(stat.Tpgid),
		Stopped: p.t.WasStopped, StopSignal: int32(p.t.StopSig),
	}
	for _, th := range p.threads {
		p.entry.Threads = append(p.entry.Threads, d.vpid(th.t.Pid))
		if err := collectThread(pid, th); err != nil {
			return fmt.Errorf("thread %d: %w", th.t.Pid, err)
		}
		th.img.Tid = d.vpid(th.t.Pid)
		p.img.Threads = append(p.img.Threads, th.img)
	}
	// The main thread's own state, read as for any thread, then the process-wide signals.
	main := &threadDump{t: p.t}
	if err := collectThread(pid, main); err != nil {
		return err
	}
	img.Xstate, img.Sigmask, img.Pending = main.img.Xstate, main.img.Sigmask, main.img.Pending
	img.Rseq, img.RobustList, img.RobustListLen = main.img.Rseq, main.img.RobustList, main.img.RobustListLen
	img.Sched = main.img.Sched
	p.mask = main.mask
	if d.tree.Cpu == nil {
		d.tree.Cpu = &imagepb.CPU{XstateSize: uint32(len(img.Xstate)), Xfeatures: linux.XStateFeatures(img.Xstate)}
	}
	if p.maps, err = procfs.ReadSmaps(pid); err != nil {
		return fmt.Errorf("read smaps: %w", err)
	}
	if err := findSyscallInsn(p.t, p.maps); err != nil {
		return err
	}
	switch status.Seccomp {
	case 1:
		return &UnsupportedError{Pid: pid, What: "seccomp", Kind: "strict seccomp mode"}
	case 2:
		if img.SeccompFilters, err = linux.SeccompFilters(pid); err != nil {
			return err
		}
	}
	timers, err := procfs.ReadTimers(pid)
	if err != nil {
		return fmt.Errorf("read timers: %w", err)
	}
	for _, pt := range timers {
		notify, ok := map[string]int32{"signal": 0, "none": 1, "thread": 4}[pt.Notify]
		if !ok {
			return &UnsupportedError{Pid: pid, What: fmt.Sprintf("POSIX timer %d", pt.ID), Kind: "timer notifying " + pt.Notify}
		}
		img.PosixTimers = append(img.PosixTimers, &imagepb.PosixTimer{Id: int32(pt.ID), Clockid: int32(pt.ClockID),
			Signo: int32(pt.Signo), SigevValue: pt.SigevValue, Notify: notify, NotifyTid: d.vpid(pt.NotifyTid)})
	}
	if err := d.inject(p, status); err != nil {
		return err
	}
	// The process-wide queue is read after the timers: a timer that fired meanwhile (its
	// signal blocked by the dump) shows as pending rather than being lost.
	shared, err := linux.PeekSigInfo(pid, true)
	if err != nil {
		return err
	}
	for _, info := range shared {
		img.Pending = append(img.Pending, &imagepb.SigInfo{Signo: int32(binary.LittleEndian.Uint32(info)), Shared: true, Info: info})
	}

	auxv, err := procfs.ReadFile(pid, "auxv")
	if err != nil {
		return fmt.Errorf("read auxv: %w", err)
	}
	img.Mm.StartCode, img.Mm.EndCode, img.Mm.StartStack = stat.StartCode, stat.EndCode, stat.StartStack
	img.Mm.StartData, img.Mm.EndData, img.Mm.StartBrk = stat.StartData, stat.EndData, stat.StartBrk
	img.Mm.ArgStart, img.Mm.ArgEnd, img.Mm.EnvStart, img.Mm.EnvEnd = stat.ArgStart, stat.ArgEnd, stat.EnvStart, stat.EnvEnd
	img.Mm.Auxv = auxv
	img.Mm.Exe = exe
	exeSt, exeErr := linux.StatPath(procfs.Path(pid, "exe"))
	if exeErr == nil {
		img.Mm.ExeSize = uint64(exeSt.Size)
	}
	if img.Cwd, err = procfs.Link(pid, "cwd"); err != nil {
		return fmt.Errorf("read cwd: %w", err)
	}
	if cwd, ok := strings.CutSuffix(img.Cwd, " (deleted)"); ok {
		st, err := linux.StatPath(procfs.Path(pid, "cwd"))
		if err != nil {
			return fmt.Errorf("read cwd: %w", err)
		}
		img.Cwd, img.CwdRemoved = cwd, &imagepb.RemovedDir{Mode: st.Mode & 0o7777, Uid: st.Uid, Gid: st.Gid}
	}
	if img.Root, err = procfs.Link(pid, "root"); err != nil {
		return fmt.Errorf("read root: %w", err)
	}
	if strings.HasSuffix(img.Root, " (deleted)") {
		return &UnsupportedError{Pid: pid, What: "root", Kind: "root directory " + img.Root, Hint: "a chroot into a removed directory cannot be made again"}
	}
	limits, err := procfs.ReadLimits(pid)
	if err != nil {
		return fmt.Errorf("read limits: %w", err)
	}
	for _, l := range limits {
		img.Rlimits = append(img.Rlimits, &imagepb.RLimit{Resource: int32(l.Resource), Cur: l.Cur, Max: l.Max})
	}
	img.Creds = &imagepb.Creds{
		Uids: status.Uids, Gids: status.Gids, Groups: status.Groups,
		CapInh: status.CapInh, CapPrm: status.CapPrm, CapEff: status.CapEff, CapBnd: status.CapBnd, CapAmb: status.CapAmb,
		NoNewPrivs: status.NoNewPrivs, Securebits: p.securebits,
	}
	for _, th := range p.threads {
		if c := th.img.Creds; c != nil {
			// The thread's securebits are not read: the process's.
			c.Securebits = p.securebits
			if proto.Equal(c, img.Creds) {
				th.img.Creds = nil
			}
		}
	}
	if img.OomScoreAdj, err = procfs.ReadInt(pid, "oom_score_adj"); err != nil {
		return fmt.Errorf("read oom_score_adj: %w", err)
	}
	if uid, err := procfs.ReadInt(pid, "loginuid"); err == nil {
		img.HasLoginuid, img.Loginuid = true, uint32(uid)
	}
	if err := d.collectVMAs(p); err != nil {
		return err
	}
	if sf := d.saved[[2]uint64{exeSt.Dev, exeSt.Ino}]; exeErr == nil && sf != nil {
		img.Mm.ExeSavedFileId = sf.Id // the binary was deleted: it is in the image
	}
	return nil
}

// checkShellJob notes a tree that runs on a terminal held by a session leader outside the
// tree, as a shell's job does: it is dumped only with ShellJob, and restored onto the
// terminal of the restore.
func (d *dumper) checkShellJob(pid int, stat *procfs.Stat) error {
	if stat.TtyNr == 0 || d.procs[stat.Sid] != nil {
		return nil
	}
	if !d.opts.ShellJob {
		return &UnsupportedError{Pid: pid, What: "terminal", Kind: fmt.Sprintf("a shell job (its session leader, pid %d, holds its terminal)", stat.Sid),
			Hint: "dump with --shell-job, and restore with --shell-job on a terminal"}
	}
	// The kernel's tty_nr is the new dev_t encoding; stat(2) gives the same.
	d.tree.ShellJob, d.tree.CttyRdev = true, stat.TtyNr
	if stat.Tpgid == stat.PGid {
		d.tree.Foreground = true
	}
	return nil
}

// inject asks the process what only it can tell, by syscalls run inside it. Nothing of the
// process is changed between two calls (tracer.Tracee.Syscall parks each thread on its own
// registers and mask), and once the scratch area is mapped each call runs from a safe return
// (armSafeReturn): a gocr killed at any moment leaves the process as it was, but for the first
// and last call and one per thread. Tracer and tracee are not pinned to one CPU: a gocr killed
// meanwhile would leave the process pinned (about 6 µs more a call, 18.5 to 22.6 ms for a
// 64-thread dump).
func (d *dumper) inject(p *procDump, status *procfs.Status) error {
	t := p.t
	size := uint64(2 * linux.PageSize)
	size += uint64(linux.SigframeSize(len(p.img.Xstate)))
	for _, th := range p.threads {
		th.t.SyscallAddr = t.SyscallAddr
		size += uint64(linux.SigframeSize(len(th.img.Xstate)))
	}
	size = (size + linux.PageSize - 1) &^ (linux.PageSize - 1)
	d.armOnStack(p)
	scratch, err := t.Syscall(linux.SysMmap, 0, size, linux.ProtRead|linux.ProtWrite|linux.ProtExec, linux.MapPrivate|linux.MapAnonymous, ^uint64(0), 0)
	if err != nil {
		return fmt.Errorf("map scratch area: %w", err)
	}
	err = d.armSafeReturn(p, scratch)
	if err == nil {
		err = d.injectQueries(p, status, scratch)
	}
	for _, th := range p.threads {
		if err != nil {
			break
		}
		err = d.injectThread(p, th, scratch)
	}
	if err == nil && d.tracking() {
		err = d.moveTracker(p)
	}
	if p.mainInScratch {
		t.ClearSafeReturn() // its frame and code go with the scratch area
	}
	if _, uerr := t.Syscall(linux.SysMunmap, scratch, size); uerr != nil && err == nil {
		err = fmt.Errorf("unmap scratch area: %w", uerr)
	}
	t.ClearSafeReturn()
	for _, th := range p.threads {
		th.t.ClearSafeReturn()
	}
	return err
}

// armOnStack arms each thread's safe return on its own stack, with the process's own
// gadgets (tracer.Tracee.ArmOnStack), where it has them: then not even the first call can
// hurt it. The gadgets are looked for once per file mapped.
func (d *dumper) armOnStack(p *procDump) {
	var g tracer.Gadgets
	for _, m := range p.maps {
		if !m.Exec || !strings.HasPrefix(m.Path, "/") || (g.SyscallRet != 0 && g.Sigreturn != 0) {
			continue
		}
		key := [3]uint64{uint64(m.DevMajor)<<32 | uint64(m.DevMinor), m.Inode, m.Offset}
		off, ok := d.gadgets[key]
		if !ok {
			found, _ := p.t.FindGadgets([][2]uint64{{m.Start, m.End}})
			off = [2]uint64{found.SyscallRet, found.Sigreturn}
			for i := range off {
				if off[i] != 0 {
					off[i] -= m.Start - 1 // kept relative, plus one: 0 is "none"
				}
			}
			if d.gadgets == nil {
				d.gadgets = map[[3]uint64][2]uint64{}
			}
			d.gadgets[key] = off
		}
		if g.SyscallRet == 0 && off[0] != 0 {
			g.SyscallRet = m.Start + off[0] - 1
		}
		if g.Sigreturn == 0 && off[1] != 0 {
			g.Sigreturn = m.Start + off[1] - 1
		}
	}
	if g.SyscallRet == 0 || g.Sigreturn == 0 {
		return
	}
	if p.t.ArmOnStack(g, p.img.Xstate) != nil {
		return
	}
	for _, th := range p.threads {
		th.t.ArmOnStack(g, th.img.Xstate)
	}
}

// armSafeReturn writes linux.SafeReturnCode in the scratch area's second page and, after it,
// a signal frame of each thread's own state (registers, mask, sigaltstack, XSTATE), and has
// each thread's next calls run from there: should gocr die during one, the thread goes on to
// rt_sigreturn and is itself again. A thread running on its sigaltstack (inside a handler)
// keeps calling from the vdso: rt_sigreturn would refuse its altstack there.
func (d *dumper) armSafeReturn(p *procDump, scratch uint64) error {
	code, frame := scratch+linux.PageSize, scratch+2*linux.PageSize
	if err := p.t.WriteMem(code, linux.SafeReturnCode); err != nil {
		return err
	}
	arm := func(t *tracer.Tracee, xstate []byte) error {
		f := frame
		frame += uint64(linux.SigframeSize(len(xstate)))
		if t.Armed() {
			return nil // on its own stack
		}
		if err := t.ArmSafeReturn(code, f, scratch, xstate); err != nil {
			return fmt.Errorf("thread %d: %w", t.Pid, err)
		}
		if t == p.t {
			p.mainInScratch = true
		}
		return nil
	}
	if err := arm(p.t, p.img.Xstate); err != nil {
		return err
	}
	for _, th := range p.threads {
		if err := arm(th.t, th.img.Xstate); err != nil {
			return err
		}
	}
	return nil
}

func (d *dumper) injectQueries(p *procDump, status *procfs.Status, scratch uint64) error {
	t, img := p.t, p.img
	buf := make([]byte, 32)
	// Signal actions: only those /proc says are caught or ignored differ from the default.
	for sig := 1; sig <= 64; sig++ {
		bit := uint64(1) << (sig - 1)
		if (status.SigCgt|status.SigIgn)&bit == 0 || sig == 9 || sig == 19 {
			continue
		}
		if _, err := t.Syscall(linux.SysRtSigaction, uint64(sig), 0, scratch, 8); err != nil {
			return fmt.Errorf("read action of signal %d: %w", sig, err)
		}
		if err := t.ReadMem(scratch, buf[:32]); err != nil {
			return err
		}
		img.Sigactions = append(img.Sigactions, &imagepb.SigAction{
			Signo: int32(sig), Handler: le64(buf[0:]), Flags: le64(buf[8:]), Restorer: le64(buf[16:]), Mask: le64(buf[24:]),
		})
	}
	var err error
	if img.Altstack, img.TidAddress, err = threadQueries(t, scratch); err != nil {
		return err
	}
	for which := 0; which < 3; which++ {
		if _, err := t.Syscall(linux.SysGetitimer, uint64(which), scratch); err != nil {
			return fmt.Errorf("read itimer %d: %w", which, err)
		}
		if err := t.ReadMem(scratch, buf[:32]); err != nil {
			return err
		}
		iv := int64(le64(buf[0:]))*1e6 + int64(le64(buf[8:]))
		val := int64(le64(buf[16:]))*1e6 + int64(le64(buf[24:]))
		if iv != 0 || val != 0 {
			img.Itimers = append(img.Itimers, &imagepb.ITimer{Which: int32(which), IntervalUsec: iv, ValueUsec: val})
		}
	}
	brk, err := t.Syscall(linux.SysBrk, 0)
	if err != nil {
		return fmt.Errorf("read brk: %w", err)
	}
	img.Mm.Brk = brk
	if _, err := t.Syscall(linux.SysPrctl, linux.PrGetPdeathsig, scratch); err != nil {
		return fmt.Errorf("read parent death signal: %w", err)
	}
	if err := t.ReadMem(scratch, buf[:4]); err != nil {
		return err
	}
	img.Pdeathsig = int32(binary.LittleEndian.Uint32(buf))
	for _, pt := range img.PosixTimers {
		if _, err := t.Syscall(linux.SysTimerGettime, uint64(pt.Id), scratch); err != nil {
			return fmt.Errorf("read POSIX timer %d: %w", pt.Id, err)
		}
		if err := t.ReadMem(scratch, buf[:32]); err != nil {
			return err
		}
		pt.IntervalNs = int64(le64(buf[0:]))*1e9 + int64(le64(buf[8:]))
		pt.ValueNs = int64(le64(buf[16:]))*1e9 + int64(le64(buf[24:]))
	}
	pers, err := t.Syscall(linux.SysPersonality, 0xffffffff)
	if err != nil {
		return fmt.Errorf("read personality: %w", err)
	}
	img.Personality = uint32(pers)
	if _, err := t.Syscall(linux.SysPrctl, linux.PrGetChildSubreaper, scratch); err != nil {
		return fmt.Errorf("read child subreaper: %w", err)
	}
	if err := t.ReadMem(scratch, buf[:4]); err != nil {
		return err
	}
	img.ChildSubreaper = binary.LittleEndian.Uint32(buf) != 0
	dumpable, err := t.Syscall(linux.SysPrctl, linux.PrGetDumpable)
	if err != nil {
		return fmt.Errorf("read dumpable: %w", err)
	}
	img.Dumpable = int32(dumpable)
	thp, err := t.Syscall(linux.SysPrctl, linux.PrGetTHPDisable)
	if err != nil {
		return fmt.Errorf("read THP disable: %w", err)
	}
	img.ThpDisable = uint32(thp)
	secbits, err := t.Syscall(linux.SysPrctl, linux.PrGetSecurebits)
	if err != nil {
		return fmt.Errorf("read securebits: %w", err)
	}
	p.securebits = uint32(secbits)
	// Linux 6.3 and later say which membarrier commands the process registered for.
	if regs, err := t.Syscall(linux.SysMembarrier, linux.MembarrierGetRegistrations, 0, 0); err == nil {
		img.Membarrier = uint32(regs)
	} else if !errors.Is(err, linux.EINVAL) {
		return fmt.Errorf("read membarrier registrations: %w", err)
	}
	return nil
}

func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

// collectThread reads what ptrace and /proc tell of a thread other than the main one.
func collectThread(pid int, th *threadDump) error {
	tid := th.t.Pid
	img := &imagepb.Thread{Tid: int32(tid), Regs: regsToImage(&th.t.Regs)}
	th.img = img
	var err error
	if img.Xstate, err = linux.GetXState(tid); err != nil {
		return err
	}
	if th.mask, err = linux.GetSigMask(tid); err != nil {
		return err
	}
	img.Sigmask = th.mask
	infos, err := linux.PeekSigInfo(tid, false)
	if err != nil {
		return err
	}
	for _, info := range infos {
		img.Pending = append(img.Pending, &imagepb.SigInfo{Signo: int32(binary.LittleEndian.Uint32(info)), Info: info})
	}
	if rs, err := linux.GetRseqConfig(tid); err == nil && rs.AbiPointer != 0 {
		img.Rseq = &imagepb.Rseq{AbiPointer: rs.AbiPointer, AbiSize: rs.Len, Flags: rs.Flags, Signature: rs.Signature}
	}
	if head, n, err := linux.GetRobustList(tid); err == nil {
		img.RobustList, img.RobustListLen = head, n
	}
	if img.Sched, err = readSched(tid); err != nil {
		return err
	}
	st, err := procfs.ReadStatus(tid)
	if err != nil {
		return err
	}
	img.Creds = &imagepb.Creds{Uids: st.Uids, Gids: st.Gids, Groups: st.Groups,
		CapInh: st.CapInh, CapPrm: st.CapPrm, CapEff: st.CapEff, CapBnd: st.CapBnd, CapAmb: st.CapAmb, NoNewPrivs: st.NoNewPrivs}
	comm, err := procfs.ReadFile(pid, fmt.Sprintf("task/%d/comm", tid))
	if err != nil {
		return err
	}
	img.Comm = strings.TrimSuffix(string(comm), "\n")
	return nil
}

// readSched reads a thread's scheduling policy, nice value, priorities and CPU affinity.
// It runs before the thread is pinned to the tracer's CPU for injected calls.
func readSched(tid int) (*imagepb.Sched, error) {
	a, err := linux.GetSchedAttr(tid)
	if err != nil {
		return nil, err
	}
	set, err := linux.GetAffinity(tid)
	if err != nil {
		return nil, err
	}
	return &imagepb.Sched{
		Policy: a.Policy, ResetOnFork: a.Flags&linux.SchedFlagResetFork != 0, Nice: a.Nice, Priority: a.Priority,
		Runtime: a.Runtime, Deadline: a.Deadline, Period: a.Period, Affinity: linux.CPUSetBytes(set),
	}, nil
}

// injectThread asks a thread its sigaltstack and tid address, with the scratch page the
// main thread mapped (the threads share its memory).
func (d *dumper) injectThread(p *procDump, th *threadDump, scratch uint64) error {
	t := th.t
	var err error
	th.img.Altstack, th.img.TidAddress, err = threadQueries(t, scratch)
	if err != nil {
		return fmt.Errorf("thread %d: %w", t.Pid, err)
	}
	return nil
}

// threadQueries asks a thread what only it can tell of itself: its sigaltstack and the
// address the kernel clears when it exits.
func threadQueries(t *tracer.Tracee, scratch uint64) (*imagepb.SigAltStack, uint64, error) {
	buf := make([]byte, 24)
	if _, err := t.Syscall(linux.SysSigaltstack, 0, scratch); err != nil {
		return nil, 0, fmt.Errorf("read sigaltstack: %w", err)
	}
	if err := t.ReadMem(scratch, buf); err != nil {
		return nil, 0, err
	}
	as := &imagepb.SigAltStack{Sp: le64(buf[0:]), Flags: int32(binary.LittleEndian.Uint32(buf[8:])), Size: le64(buf[16:])}
	if _, err := t.Syscall(linux.SysPrctl, linux.PrGetTidAddress, scratch); err != nil {
		return nil, 0, fmt.Errorf("read tid address: %w", err)
	}
	if err := t.ReadMem(scratch, buf[:8]); err != nil {
		return nil, 0, err
	}
	return as, le64(buf), nil
}

// collectVMAs classifies every mapping, refusing those the core cannot restore.
func (d *dumper) collectVMAs(p *procDump) error {
	pid := p.t.Pid
	for i := range p.maps {
		m := &p.maps[i]
		v := &imagepb.VMA{Start: m.Start, End: m.End, Shared: m.Shared, Pgoff: m.Offset, Path: m.Path,
			Dev: uint64(m.DevMajor)<<32 | uint64(m.DevMinor), Ino: m.Inode, VmFlags: m.VmFlags}
		if m.Read {
			v.Prot |= linux.ProtRead
		}
		if m.Write {
			v.Prot |= linux.ProtWrite
		}
		if m.Exec {
			v.Prot |= linux.ProtExec
		}
		what := fmt.Sprintf("mapping %#x-%#x", m.Start, m.End)
		unsupported := func(kind, hint string) error {
			return &UnsupportedError{Pid: pid, What: what, Kind: kind, Hint: hint}
		}
		if pl, err := d.claimMapping(pid, m, v); err != nil {
			return err
		} else if pl {
			p.img.Vmas = append(p.img.Vmas, v)
			continue
		}
		switch {
		case m.Path == "[vdso]":
			v.Kind = imagepb.VMAKind_VMA_KIND_VDSO
		case m.Path == "[vvar]":
			v.Kind = imagepb.VMAKind_VMA_KIND_VVAR
		case m.Path == "[vvar_vclock]":
			v.Kind = imagepb.VMAKind_VMA_KIND_VVAR_VCLOCK
		case m.Path == "[vsyscall]":
			v.Kind = imagepb.VMAKind_VMA_KIND_VSYSCALL
		case m.Path == "[heap]":
			v.Kind = imagepb.VMAKind_VMA_KIND_HEAP
		case m.Path == "[stack]":
			v.Kind = imagepb.VMAKind_VMA_KIND_STACK
		case m.Inode == 0 && (m.Path == "" || strings.HasPrefix(m.Path, "[anon:")):
			if m.Shared {
				return unsupported("shared anonymous mapping without an inode", "")
			}
			v.Kind = imagepb.VMAKind_VMA_KIND_ANON_PRIVATE
		case m.Shared && m.DevMajor == 0 && m.DevMinor == 1 && strings.HasPrefix(m.Path, "/dev/zero"):
			v.Kind = imagepb.VMAKind_VMA_KIND_ANON_SHARED
			if err := d.addShmem(p, m, v); err != nil {
				return err
			}
		case m.Path == "/dev/zero" && !m.Shared:
			// A private mapping of /dev/zero is anonymous memory; it is mapped from /dev/zero
			// again so that it looks the same.
			v.Kind = imagepb.VMAKind_VMA_KIND_ANON_PRIVATE
		case strings.HasPrefix(m.Path, "/SYSV"):
			v.Kind = imagepb.VMAKind_VMA_KIND_SYSV_SHM
			v.SysvShmId = int32(m.Inode) // the inode of a segment's file is its id
			if err := d.addShmem(p, m, v); err != nil {
				return err
			}
			if err := d.addSysvShm(v); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
		case strings.HasPrefix(m.Path, "/"):
			st, err := linux.StatPath(procfs.Path(pid, fmt.Sprintf("map_files/%x-%x", m.Start, m.End)))
			if err != nil {
				return fmt.Errorf("%s: stat %s: %w", what, m.Path, err)
			}
			if st.Mode&linux.SIFMT != linux.SIFREG {
				if strings.HasPrefix(m.Path, "/[aio]") {
					return unsupported("Linux AIO ring (io_setup) "+m.Path, "load the aio plugin: gocr --plugin aio dump ...")
				}
				return unsupported("device mapping "+m.Path, "load the devmap plugin (gocr --plugin devmap dump ...) or the device vendor's")
			}
			v.Kind = imagepb.VMAKind_VMA_KIND_FILE_PRIVATE
			if m.Shared {
				v.Kind = imagepb.VMAKind_VMA_KIND_FILE_SHARED
			}
			v.FileFlags = linux.ORdonly
			if m.Shared && m.HasFlag("mw") {
				v.FileFlags = linux.ORdwr
			}
			if st.Nlink == 0 {
				// Deleted, or a memfd: no path leads to it, so its content goes in the image.
				id, err := d.saveFile(pid, m, st)
				if err != nil {
					return fmt.Errorf("%s: %w", what, err)
				}
				v.SavedFileId = id
			} else if err := d.recordMappedFile(pid, m, st); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
		default:
			return unsupported("mapping "+m.Path, "")
		}
		p.img.Vmas = append(p.img.Vmas, v)
	}
	return nil
}

// claimMapping marks a mapping a plugin claims (by path, or by device number for a device
// mapping); its DumpVMA is called later, off the tracer thread.
func (d *dumper) claimMapping(pid int, m *procfs.Mapping, v *imagepb.VMA) (bool, error) {
	// Memory the core maps itself, though its path is under /dev: shared anonymous memory
	// (/dev/zero (deleted)) and POSIX shared memory.
	if !strings.HasPrefix(m.Path, "/") || strings.HasPrefix(m.Path, "/dev/zero") || strings.HasPrefix(m.Path, "/dev/shm/") || strings.HasPrefix(m.Path, "/SYSV") {
		return false, nil
	}
	var rdev uint64
	isChar := false
	if st, err := linux.StatPath(procfs.Path(pid, fmt.Sprintf("map_files/%x-%x", m.Start, m.End))); err == nil && st.Mode&linux.SIFMT == linux.SIFCHR {
		rdev, isChar = st.Rdev, true
	}
	pl, err := d.host.ClaimMapping(m.Path, uint32((rdev>>8)&0xfff), isChar)
	if err != nil || pl == nil {
		return false, err
	}
	v.Kind, v.Plugin, v.Rdev = imagepb.VMAKind_VMA_KIND_PLUGIN, pl.Name, rdev
	return true, nil
}

// saveFile saves, once per file, the content of a mapped file that has no path any more (a
// deleted file, a memfd) and returns its SavedFile id.
func (d *dumper) saveFile(pid int, m *procfs.Mapping, st linux.Stat) (uint32, error) {
	key := [2]uint64{st.Dev, st.Ino}
	if sf, ok := d.saved[key]; ok {
		return sf.Id, nil
	}
	if d.saved == nil {
		d.saved = map[[2]uint64]*imagepb.SavedFile{}
	}
	sf := &imagepb.SavedFile{Id: uint32(len(d.saved) + 1), Dev: st.Dev, Ino: st.Ino, Mode: st.Mode & 0o7777,
		Path: strings.TrimSuffix(m.Path, " (deleted)")}
	f, err := os.Open(procfs.Path(pid, fmt.Sprintf("map_files/%x-%x", m.Start, m.End)))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if !strings.HasPrefix(sf.Path, "/memfd:") {
		if err := d.files.ghostCheck(sf.Path, st.Size, func(kind, hint string) error {
			return &UnsupportedError{Pid: pid, What: fmt.Sprintf("mapping %#x-%#x", m.Start, m.End), Kind: kind, Hint: hint}
		}); err != nil {
			return 0, err
		}
	}
	if name, ok := strings.CutPrefix(sf.Path, "/memfd:"); ok {
		sf.Memfd, sf.MemfdName = true, name
		seals, err := linux.Seals(int(f.Fd()))
		if err != nil {
			return 0, err
		}
		sf.Seals = uint32(seals)
	}
	name := image.SavedFileName(sf.Id)
	df, err := d.w.CreateData(name, st.Size)
	if err != nil {
		return 0, err
	}
	sf.Ghost, err = saveGhost(int(f.Fd()), st, df)
	n := st.Size
	df.Close()
	if err != nil {
		return 0, fmt.Errorf("save %s: %w", m.Path, err)
	}
	sf.Size, sf.DataFile = uint64(n), name
	d.saved[key] = sf
	d.tree.SavedFiles = append(d.tree.SavedFiles, sf)
	return sf.Id, nil
}

// recordMappedFile notes, once per file, the size of a mapped file and, for a binary or
// library (mapped private), its checksum, so that a restore or a check can tell whether the
// file here is the same.
func (d *dumper) recordMappedFile(pid int, m *procfs.Mapping, st linux.Stat) error {
	key := [2]uint64{st.Dev, st.Ino}
	if d.mapped == nil {
		d.mapped = map[[2]uint64]*imagepb.MappedFile{}
	}
	mf := d.mapped[key]
	if mf == nil {
		mf = &imagepb.MappedFile{Path: m.Path, Size: uint64(st.Size)}
		d.mapped[key] = mf
		d.tree.MappedFiles = append(d.tree.MappedFiles, mf)
	}
	if m.Shared || mf.HasCrc32C {
		return nil
	}
	f, err := os.Open(procfs.Path(pid, fmt.Sprintf("map_files/%x-%x", m.Start, m.End)))
	if err != nil {
		return err
	}
	defer f.Close()
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("checksum %s: %w", m.Path, err)
	}
	mf.HasCrc32C, mf.Crc32C = true, h.Sum32()
	return nil
}

// addSysvShm records a System V segment once for the whole dump.
func (d *dumper) addSysvShm(v *imagepb.VMA) error {
	for _, s := range d.tree.SysvShm {
		if s.Id == v.SysvShmId {
			return nil
		}
	}
	info, err := linux.ShmStat(int(v.SysvShmId))
	if err != nil {
		return err
	}
	d.tree.SysvShm = append(d.tree.SysvShm, &imagepb.SysvShm{Id: v.SysvShmId, Key: info.Key, Size: info.Size,
		Mode: info.Mode & 0o777, Uid: info.Uid, Gid: info.Gid, Removed: info.Mode&linux.ShmDest != 0, ShmemId: v.ShmemId})
	return nil
}

// addShmem records the shared anonymous memory behind a mapping once for the whole dump.
func (d *dumper) addShmem(p *procDump, m *procfs.Mapping, v *imagepb.VMA) error {
	key := [2]uint64{uint64(m.DevMajor)<<32 | uint64(m.DevMinor), m.Inode}
	s := d.shmem[key]
	if s == nil {
		s = &imagepb.SharedMemory{Id: uint32(len(d.shmem) + 1), Dev: key[0], Ino: key[1]}
		d.shmem[key] = s
		d.tree.Shmem = append(d.tree.Shmem, s)
		d.shmemSrc = append(d.shmemSrc, shmemSource{shm: s, pid: p.t.Pid, start: m.Start, end: m.End})
	}
	if end := m.Offset + (m.End - m.Start); end > s.Size {
		s.Size = end
	}
	v.ShmemId = s.Id
	return nil
}

func regsToImage(r *linux.Regs) *imagepb.Regs {
	return &imagepb.Regs{
		R15: r.R15, R14: r.R14, R13: r.R13, R12: r.R12, Rbp: r.Rbp, Rbx: r.Rbx, R11: r.R11, R10: r.R10,
		R9: r.R9, R8: r.R8, Rax: r.Rax, Rcx: r.Rcx, Rdx: r.Rdx, Rsi: r.Rsi, Rdi: r.Rdi, OrigRax: r.Orig_rax,
		Rip: r.Rip, Cs: r.Cs, Eflags: r.Eflags, Rsp: r.Rsp, Ss: r.Ss, FsBase: r.Fs_base, GsBase: r.Gs_base,
		Ds: r.Ds, Es: r.Es, Fs: r.Fs, Gs: r.Gs,
	}
}

func regsFromImage(r *imagepb.Regs) linux.Regs {
	return linux.Regs{
		R15: r.R15, R14: r.R14, R13: r.R13, R12: r.R12, Rbp: r.Rbp, Rbx: r.Rbx, R11: r.R11, R10: r.R10,
		R9: r.R9, R8: r.R8, Rax: r.Rax, Rcx: r.Rcx, Rdx: r.Rdx, Rsi: r.Rsi, Rdi: r.Rdi, Orig_rax: r.OrigRax,
		Rip: r.Rip, Cs: r.Cs, Eflags: r.Eflags, Rsp: r.Rsp, Ss: r.Ss, Fs_base: r.FsBase, Gs_base: r.GsBase,
		Ds: r.Ds, Es: r.Es, Fs: r.Fs, Gs: r.Gs,
	}
}
