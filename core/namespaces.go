package core

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/procfs"
	"github.com/gocr/gocr/internal/pidinit"
)

// This file is about the namespaces a tree has of its own: a container seen from the host.
// The dump reads which of the roots' namespaces are not gocr's and what they hold; every pid it
// writes is the one of the tree's pid namespace. The restore makes those namespaces again, new,
// and puts the tree in them.

// namespaceKinds are the kinds of namespace a process can have, as /proc/PID/ns names them.
var namespaceKinds = []string{"mnt", "pid", "net", "ipc", "uts", "user", "cgroup", "time"}

// ownNamespaces are the kinds a tree may have of its own; the others it must share with gocr,
// which reads its files, sockets, IPC objects, clocks and credentials from its own view.
var ownNamespaces = map[string]bool{"pid": true, "uts": true, "net": true, "ipc": true}

// threadNsLinks reads the namespace links of the calling thread.
func threadNsLinks() (map[string]string, error) {
	out := map[string]string{}
	for _, ns := range namespaceKinds {
		l, err := os.Readlink("/proc/thread-self/ns/" + ns)
		if err != nil {
			continue // a kernel without this kind of namespace
		}
		out[ns] = l
	}
	return out, nil
}

// nsLinks reads the namespace links of pid (kinds this kernel lacks are left out).
func nsLinks(pid int) (map[string]string, error) {
	out := map[string]string{}
	for _, ns := range namespaceKinds {
		if _, err := os.Readlink("/proc/self/ns/" + ns); err != nil {
			continue // a kernel without this kind of namespace
		}
		l, err := procfs.Link(pid, "ns/"+ns)
		if err != nil {
			return nil, fmt.Errorf("read its %s namespace: %w", ns, err)
		}
		out[ns] = l
	}
	return out, nil
}

// treeNamespaces reads which namespaces the root has of its own, refuses the kinds gocr does
// not make again, and records the rest in the tree. It runs before anything is frozen.
func (d *dumper) treeNamespaces() error {
	// gocr's namespaces are those of its tracer thread (before it joins the tree's): not
	// /proc/PID's, the main thread's, which a program using gocr may have moved elsewhere.
	var ours map[string]string
	err := d.thread.Do(func() error {
		var err error
		ours, err = threadNsLinks()
		return err
	})
	if err != nil {
		return fmt.Errorf("dump: gocr's own namespaces: %w", err)
	}
	d.ownNs = ours
	d.nsRoot = nil
	for _, root := range d.opts.Roots {
		links, err := nsLinks(root)
		if err != nil {
			return pidError(root, err)
		}
		var own, refused []string
		for _, ns := range namespaceKinds {
			if l, ok := links[ns]; ok && l != ours[ns] {
				own = append(own, ns)
				if !ownNamespaces[ns] {
					refused = append(refused, ns)
				}
			}
		}
		if len(own) == 0 {
			if d.nsRoot != nil {
				return fmt.Errorf("dump: pid %d shares gocr's namespaces but pid %d has its own: dump them apart: %w", root, d.opts.Roots[0], ErrBadArgs)
			}
			continue
		}
		if len(d.opts.Roots) > 1 {
			return fmt.Errorf("dump: pid %d has namespaces of its own (%s): a tree in namespaces is dumped alone: %w", root, strings.Join(own, ", "), ErrBadArgs)
		}
		if len(refused) > 0 {
			return &UnsupportedError{Pid: root, What: "namespaces", Kind: fmt.Sprintf("%s namespaces of its own (gocr makes pid, UTS, network and IPC namespaces again, not these yet)", strings.Join(refused, ", ")),
				Hint: "run gocr inside those namespaces, or dump a tree that shares them with gocr"}
		}
		ns := &imagepb.Namespaces{}
		for _, kind := range own {
			switch kind {
			case "pid":
				st, err := procfs.ReadStatus(root)
				if err != nil {
					return pidError(root, err)
				}
				if n := len(st.NSpid); n < 2 || st.NSpid[n-1] != 1 {
					return &UnsupportedError{Pid: root, What: "pid namespace", Kind: fmt.Sprintf("a process inside a pid namespace (pid %d there) that is not its init", st.NSpid[len(st.NSpid)-1]),
						Hint: "dump the namespace's init (pid 1 inside), whose tree holds all of it"}
				}
				ns.Pid = true
			case "uts":
				host, domain, err := utsNames(root)
				if err != nil {
					return pidError(root, err)
				}
				ns.Uts, ns.Hostname, ns.Domainname = true, host, domain
			case "net":
				ns.Net = true
			case "ipc":
				ns.Ipc = true
			}
		}
		d.tree.Namespaces = ns
		d.nsRoot = links
		if err := d.joinTreeNamespaces(root); err != nil {
			return err
		}
	}
	return nil
}

// joinTreeNamespaces moves the tracer thread into the root's network and IPC namespaces of
// its own, so that the sockets and System V objects it looks up are the tree's, and checks
// that the network namespace holds nothing gocr would not make again.
func (d *dumper) joinTreeNamespaces(root int) error {
	ns := d.tree.Namespaces
	var kinds []string
	if ns.Net {
		kinds = append(kinds, "net")
		d.files.netns = procfs.Path(root, "ns/net")
		d.files.inNetns = d.thread.Do
	}
	if ns.Ipc {
		kinds = append(kinds, "ipc")
	}
	if len(kinds) == 0 {
		return nil
	}
	return d.thread.Do(func() error {
		if err := joinNamespaces(root, kinds...); err != nil {
			return fmt.Errorf("dump pid %d: %w", root, err)
		}
		if !ns.Net {
			return nil
		}
		links, err := net.Interfaces()
		if err != nil {
			return fmt.Errorf("dump pid %d: list the links of its network namespace: %w", root, err)
		}
		var others []string
		for _, l := range links {
			if l.Name != "lo" {
				others = append(others, l.Name)
			}
		}
		if len(others) > 0 {
			return &UnsupportedError{Pid: root, What: "network namespace", Kind: fmt.Sprintf("links other than lo (%s)", strings.Join(others, ", ")),
				Hint: "gocr makes a network namespace again with its loopback link only"}
		}
		ns.LoUp, err = linux.LinkUp("lo")
		return err
	})
}

// collectIPC reads the System V semaphore sets and message queues of the tree's own IPC
// namespace (on the tracer thread, inside it), once the tree is frozen, and refuses shared
// memory segments that no process of the tree attaches (their content is read through the
// processes' mappings).
func (d *dumper) collectIPC() error {
	ns := d.tree.Namespaces
	if ns == nil || !ns.Ipc {
		return nil
	}
	root := d.order[0]
	ids, err := linux.SysvList("shm")
	if err != nil {
		return fmt.Errorf("dump: IPC namespace: %w", err)
	}
	for _, id := range ids {
		found := false
		for _, s := range d.tree.SysvShm {
			found = found || int(s.Id) == id
		}
		if !found {
			// Attached by no process: gocr attaches it (in the namespace, from this thread)
			// to read it, until the dump ends.
			if err := d.addUnattachedShm(id); err != nil {
				return &UnsupportedError{Pid: root, What: "IPC namespace", Kind: fmt.Sprintf("System V shared memory segment %d, attached by no process of the tree: %v", id, err)}
			}
		}
	}
	if ids, err = linux.SysvList("sem"); err != nil {
		return fmt.Errorf("dump: IPC namespace: %w", err)
	}
	for _, id := range ids {
		i, vals, err := linux.SemRead(id)
		if err != nil {
			return fmt.Errorf("dump: IPC namespace: semaphore set %d: %w", id, err)
		}
		s := &imagepb.SysvSem{Ids: sysvIdsImage(i)}
		for _, v := range vals {
			s.Values = append(s.Values, uint32(v))
		}
		ns.SysvSem = append(ns.SysvSem, s)
	}
	if ids, err = linux.SysvList("msg"); err != nil {
		return fmt.Errorf("dump: IPC namespace: %w", err)
	}
	for _, id := range ids {
		i, qbytes, msgs, err := linux.MsgRead(id)
		if err != nil {
			return fmt.Errorf("dump: IPC namespace: %w", err)
		}
		q := &imagepb.SysvMsgQueue{Ids: sysvIdsImage(i), Qbytes: qbytes}
		for _, m := range msgs {
			q.Messages = append(q.Messages, &imagepb.SysvMsg{Mtype: m.Type, Text: m.Text})
		}
		ns.SysvMsg = append(ns.SysvMsg, q)
	}
	return nil
}

// checkNamespaces refuses a process of the tree whose namespaces are not its root's (a nested
// container): it would be restored in the wrong ones.
func (d *dumper) checkNamespaces(pid int) error {
	want := d.nsRoot
	if want == nil {
		want = d.ownNs
	}
	links, err := nsLinks(pid)
	if err != nil {
		return err
	}
	var differ []string
	for _, ns := range namespaceKinds {
		if links[ns] != want[ns] {
			differ = append(differ, ns)
		}
	}
	if len(differ) > 0 {
		whose := "gocr's"
		if d.nsRoot != nil {
			whose = "its root's"
		}
		return &UnsupportedError{Pid: pid, What: "namespaces", Kind: fmt.Sprintf("a process in other %s namespaces than %s (a container inside the tree?)", strings.Join(differ, ", "), whose),
			Hint: "dump that inner container on its own"}
	}
	return nil
}

// notePids records the pid of pid and of its threads in the tree's pid namespace.
func (d *dumper) notePids(pid int, tids []int) error {
	if d.tree.Namespaces == nil || !d.tree.Namespaces.Pid {
		return nil
	}
	for _, tid := range append([]int{pid}, tids...) {
		b, err := procfs.ReadFile(pid, fmt.Sprintf("task/%d/status", tid))
		if err != nil {
			return fmt.Errorf("dump pid %d: read status of thread %d: %w", pid, tid, err)
		}
		ns := procfs.ParseStatus(b).NSpid
		if len(ns) < 2 {
			return fmt.Errorf("dump pid %d: thread %d is not in the tree's pid namespace", pid, tid)
		}
		d.vpids[tid] = int32(ns[len(ns)-1])
	}
	return nil
}

// vpid is the pid the image records for host pid h: the same without a pid namespace of the
// tree's own, else its pid there, or 0 for a process outside the namespace (the root's parent,
// a session that came from outside).
func (d *dumper) vpid(h int) int32 {
	if d.tree.Namespaces == nil || !d.tree.Namespaces.Pid {
		return int32(h)
	}
	return d.vpids[h]
}

// utsNames reads the host and domain names of pid's UTS namespace, from an OS thread that
// joins it and then ends with its goroutine.
func utsNames(pid int) (host, domain string, err error) {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is in another namespace
		fd, err := linux.Open(procfs.Path(pid, "ns/uts"), linux.ORdonly|linux.OCloexec, 0)
		if err != nil {
			done <- err
			return
		}
		defer linux.Close(fd)
		if err := linux.Setns(fd, linux.CloneNewUTS); err != nil {
			done <- fmt.Errorf("join its uts namespace: %w", err)
			return
		}
		host, domain, err = linux.Uname()
		done <- err
	}()
	err = <-done
	return host, domain, err
}

// InitName is argv[0] of gocr's init of a pid namespace a restore makes (RestoreOptions.NewPidns);
// argv[1] is the pid of the tree's root there. gocr's main runs pidinit.Run when it sees it.
const InitName = pidinit.Name

// newPidns tells whether the tree is restored into a new pid namespace.
func (r *restorer) newPidns() bool {
	return r.opts.NewPidns || r.c.Tree.Namespaces != nil && r.c.Tree.Namespaces.Pid
}

// initMode tells whether gocr's init is the new pid namespace's pid 1: the tree was dumped
// from gocr's own pid namespace, and its root is not an init.
func (r *restorer) initMode() bool {
	return r.newPidns() && (r.c.Tree.Namespaces == nil || !r.c.Tree.Namespaces.Pid)
}

// setHostname gives a root made with a UTS namespace of its own its names, before it makes
// children.
func (r *restorer) setHostname(p *procRestore) error {
	ns := r.c.Tree.Namespaces
	if ns == nil || !ns.Uts {
		return nil
	}
	for _, n := range []struct {
		nr   int
		name string
	}{{linux.SysSethostname, ns.Hostname}, {linux.SysSetdomainname, ns.Domainname}} {
		a, err := p.arg(scratchArg, []byte(n.name))
		if err != nil {
			return err
		}
		if _, err := r.call(p, "set host name", n.nr, a, uint64(len(n.name))); err != nil {
			return fmt.Errorf("restore pid %d: %w", p.entry.Pid, err)
		}
	}
	return nil
}

// releaseInit lets gocr's init run, once the tree is whole: without the scratch area, on
// gocr's CPUs, no longer killed with gocr.
func (r *restorer) releaseInit() error {
	s := r.initT
	if s == nil {
		return nil
	}
	if _, err := s.t.Syscall(linux.SysMunmap, s.scratch, scratchSize); err != nil {
		return fmt.Errorf("restore: init: %w", err)
	}
	if _, err := s.t.Syscall(linux.SysClose, stubPidfd); err != nil {
		return fmt.Errorf("restore: init: %w", err)
	}
	if err := linux.SetAffinity(s.t.Pid, r.mask); err != nil {
		return fmt.Errorf("restore: init: %w", err)
	}
	// Signals stay blocked (pending) until the init's Go runtime passes them on. The runtime
	// unblocks the ones that end a process (SIGTERM, SIGINT...) as it starts, and one caught
	// before signal.Notify would end the init (Go exits with 2: a pid namespace's init
	// ignores the default action it raises) instead of reaching the root; so the restore
	// returns only when the init says, on its fd 4, that it passes them on.
	if err := linux.SetSigMask(s.t.Pid, ^uint64(0)); err != nil {
		return fmt.Errorf("restore: init: %w", err)
	}
	if err := linux.SetOptions(s.t.Pid, restoreOptions); err != nil {
		return fmt.Errorf("restore: init: %w", err)
	}
	if err := linux.Detach(s.t.Pid, 0); err != nil {
		return fmt.Errorf("restore: init: %w", err)
	}
	r.initT = nil
	rd := r.initReady
	r.initReady = nil
	defer rd.Close()
	rd.SetReadDeadline(time.Now().Add(initStartLimit))
	if _, err := rd.Read(make([]byte, 1)); err != nil {
		return fmt.Errorf("restore: the pid namespace's init (pid %d) did not start within %s: %w", s.t.Pid, initStartLimit, err)
	}
	return nil
}

// initStartLimit is how long the init's Go runtime may take to start.
const initStartLimit = 10 * time.Second

// setHost records the host pid of the process or thread the image knows as pid.
func (r *restorer) setHost(pid int32, host int) {
	r.hostsMu.Lock()
	defer r.hostsMu.Unlock()
	r.hosts[pid] = host
}

// hostPid is the pid gocr sees for the image's pid (or tid), 0 before it is made.
func (r *restorer) hostPid(pid int) int {
	r.hostsMu.Lock()
	defer r.hostsMu.Unlock()
	return r.hosts[int32(pid)]
}

// joinNamespaces moves the calling thread (locked to it) into pid's namespaces of kinds.
func joinNamespaces(pid int, kinds ...string) error {
	flags := map[string]int{"net": linux.CloneNewNet, "ipc": linux.CloneNewIPC, "uts": linux.CloneNewUTS}
	for _, kind := range kinds {
		fd, err := linux.Open(procfs.Path(pid, "ns/"+kind), linux.ORdonly|linux.OCloexec, 0)
		if err != nil {
			return err
		}
		err = linux.Setns(fd, flags[kind])
		linux.Close(fd)
		if err != nil {
			return fmt.Errorf("join the %s namespace of pid %d: %w", kind, pid, err)
		}
	}
	return nil
}

// prepareNamespaces runs on the tracer thread before anything else is made. For a tree with
// network or IPC namespaces of its own, it starts the stub in new ones, joins them (so that the
// sockets and System V objects made next are made there), brings the loopback link up and makes
// the namespace's semaphore sets and message queues again.
func (r *restorer) prepareNamespaces() error {
	ns := r.c.Tree.Namespaces
	if ns == nil || !ns.Net && !ns.Ipc {
		return nil
	}
	stub, err := r.startStub(r.c.Tree.Roots[0])
	if err != nil {
		return err
	}
	r.stub = stub
	var kinds []string
	if ns.Net {
		kinds = append(kinds, "net")
	}
	if ns.Ipc {
		kinds = append(kinds, "ipc")
	}
	if err := joinNamespaces(stub.t.Pid, kinds...); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if ns.Net && ns.LoUp {
		if err := linux.SetLinkUp("lo"); err != nil {
			return fmt.Errorf("restore: network namespace: %w", err)
		}
	}
	for _, s := range ns.SysvSem {
		vals := make([]uint16, len(s.Values))
		for i, v := range s.Values {
			vals[i] = uint16(v)
		}
		if err := linux.SemCreate(sysvIds(s.Ids), vals); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	for _, q := range ns.SysvMsg {
		var msgs []linux.Msg
		for _, m := range q.Messages {
			msgs = append(msgs, linux.Msg{Type: m.Mtype, Text: m.Text})
		}
		if err := linux.MsgCreate(sysvIds(q.Ids), q.Qbytes, msgs); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	return nil
}

func sysvIds(i *imagepb.SysvIds) linux.SysvIds {
	if i == nil {
		return linux.SysvIds{}
	}
	return linux.SysvIds{ID: i.Id, Key: i.Key, Mode: i.Mode, Uid: i.Uid, Gid: i.Gid}
}

func sysvIdsImage(i linux.SysvIds) *imagepb.SysvIds {
	return &imagepb.SysvIds{Id: i.ID, Key: i.Key, Mode: i.Mode, Uid: i.Uid, Gid: i.Gid}
}

// addUnattachedShm records a System V segment of the tree's IPC namespace that no process
// attaches: gocr attaches it read-only to take its content with the other shared memory
// (detached when the dump ends), and the restore makes it again, attached by nobody.
func (d *dumper) addUnattachedShm(id int) error {
	info, err := linux.ShmStat(id)
	if err != nil {
		return err
	}
	mem, err := linux.ShmAttachReadOnly(id)
	if err != nil {
		return err
	}
	d.attached = append(d.attached, mem)
	start := linux.AddrOf(mem)
	s := &imagepb.SharedMemory{Id: uint32(len(d.shmem) + 1), Size: uint64(len(mem))}
	d.shmem[[2]uint64{0, uint64(id)}] = s
	d.tree.Shmem = append(d.tree.Shmem, s)
	d.shmemSrc = append(d.shmemSrc, shmemSource{shm: s, pid: os.Getpid(), start: start, end: start + uint64(len(mem))})
	d.tree.SysvShm = append(d.tree.SysvShm, &imagepb.SysvShm{Id: int32(id), Key: info.Key, Size: info.Size,
		Mode: info.Mode & 0o777, Uid: info.Uid, Gid: info.Gid, ShmemId: s.Id})
	return nil
}
