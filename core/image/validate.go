package image

import (
	"net/netip"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/gocr/gocr/core/image/imagepb"
)

// Bounds of an honest image on x86_64.
const (
	pageSize     = 4096
	taskSizeMax  = 0x7ffffffff000 // TASK_SIZE_MAX with 4-level paging
	vsyscallAddr = 0xffffffffff600000
	maxXState    = 64 << 10
	maxAuxv      = 4096
	maxFds       = 1 << 20
	maxSig       = 64
)

var netLockName = regexp.MustCompile(`^gocr-[0-9a-f]{16}$`)

// validate checks every count, length and offset of the metadata against each other and
// against the sizes of the data files, so that a restore never acts on a value it did not check.
func (c *Checkpoint) validate() error {
	t := c.Tree
	if len(t.Processes) == 0 {
		return corrupt(TreeName, "no processes")
	}
	if t.Cpu == nil {
		return corrupt(TreeName, "no CPU description")
	}
	if t.Cpu.XstateSize < 512 || t.Cpu.XstateSize > maxXState {
		return corrupt(TreeName, "XSTATE size %d out of range", t.Cpu.XstateSize)
	}
	// The restore deletes this nftables table: it must be one a dump made, nobody's firewall.
	if t.NetLock != "" && !netLockName.MatchString(t.NetLock) {
		return corrupt(TreeName, "network lock %q is not a name gocr makes", t.NetLock)
	}
	pids := map[int32]*imagepb.ProcessEntry{}
	for _, p := range t.Processes {
		// A pgid or sid of 0 is what /proc shows for a group or session whose leader lives
		// outside our PID namespace (a container); such a group is inherited at restore.
		if p.Pid <= 0 || p.Pgid < 0 || p.Sid < 0 || p.Ppid < 0 {
			return corrupt(TreeName, "process %d: bad pid, pgid or sid", p.Pid)
		}
		if _, dup := pids[p.Pid]; dup {
			return corrupt(TreeName, "process %d listed twice", p.Pid)
		}
		pids[p.Pid] = p
	}
	tids := map[int32]bool{}
	for _, p := range t.Processes {
		for _, tid := range p.Threads {
			tids[tid] = true
		}
	}
	isRoot := map[int32]bool{}
	for _, r := range t.Roots {
		if pids[r] == nil {
			return corrupt(TreeName, "root %d is not a process of the image", r)
		}
		isRoot[r] = true
	}
	if len(t.Roots) == 0 {
		return corrupt(TreeName, "no root process")
	}
	for _, p := range t.Processes {
		if !isRoot[p.Pid] && pids[p.Ppid] == nil {
			return corrupt(TreeName, "process %d: parent %d is not in the image", p.Pid, p.Ppid)
		}
		if s := p.StopSignal; s != 0 && (s < 19 || s > 22) {
			return corrupt(TreeName, "process %d: stop signal %d", p.Pid, s)
		}
		if p.Zombie {
			// Made again from its parent, which a root is not; a zombie has no children.
			ws := p.ExitStatus
			exited, sig := ws&0x7f == 0 && ws&^0xff00 == 0, ws&0x7f
			if isRoot[p.Pid] || pids[p.Ppid].Zombie || !(exited || (sig > 0 && sig < 65 && ws&^0xff == 0)) {
				return corrupt(TreeName, "zombie %d: a root, a zombie's child, or exit status %#x", p.Pid, ws)
			}
		}
	}
	pipes := map[uint32]*imagepb.Pipe{}
	for _, p := range t.Pipes {
		if _, dup := pipes[p.Id]; dup {
			return corrupt(TreeName, "pipe %d listed twice", p.Id)
		}
		pipes[p.Id] = p
		if p.Capacity < pageSize || p.Capacity > 1<<30 || p.DataLen > uint64(p.Capacity) {
			return corrupt(TreeName, "pipe %d: %d bytes in a pipe of %d", p.Id, p.DataLen, p.Capacity)
		}
		if err := c.dataFile(p.DataFile, p.DataLen, PipeDataName(p.Id)); err != nil {
			return err
		}
	}
	files := map[uint32]*imagepb.OpenFile{}
	for _, f := range t.Files {
		if _, dup := files[f.Id]; dup {
			return corrupt(TreeName, "file %d listed twice", f.Id)
		}
		files[f.Id] = f
		if o := f.Owner; o != nil && (o.Type < 0 || o.Type > 2 || (o.Pid != 0 && !tids[o.Pid]) || o.Signal < 0 || o.Signal > 64) {
			return corrupt(TreeName, "file %d: bad owner", f.Id)
		}
		switch f.Kind {
		case imagepb.FileKind_FILE_KIND_PIPE, imagepb.FileKind_FILE_KIND_FIFO:
			if pipes[f.PipeId] == nil {
				return corrupt(TreeName, "file %d: pipe %d not in the image", f.Id, f.PipeId)
			}
		case imagepb.FileKind_FILE_KIND_REGULAR, imagepb.FileKind_FILE_KIND_DIRECTORY, imagepb.FileKind_FILE_KIND_CHAR_DEVICE,
			imagepb.FileKind_FILE_KIND_EVENTFD, imagepb.FileKind_FILE_KIND_OPATH:
		case imagepb.FileKind_FILE_KIND_TIMERFD:
			if f.Timerfd == nil || f.Timerfd.ValueNs < 0 || f.Timerfd.IntervalNs < 0 {
				return corrupt(TreeName, "file %d: bad timerfd", f.Id)
			}
		case imagepb.FileKind_FILE_KIND_SIGNALFD, imagepb.FileKind_FILE_KIND_MEMFD:
		case imagepb.FileKind_FILE_KIND_PLUGIN:
			found := false
			for _, n := range t.Plugins {
				found = found || n == f.Plugin
			}
			if !found || f.PluginPid <= 0 || f.PluginFd < 0 {
				return corrupt(TreeName, "file %d: plugin %q not listed, or bad pid or fd", f.Id, f.Plugin)
			}
		case imagepb.FileKind_FILE_KIND_PTY_MASTER, imagepb.FileKind_FILE_KIND_PTY_SLAVE:
			if f.PtyIndex < 0 || f.PtyIndex >= 1<<20 || (f.Kind == imagepb.FileKind_FILE_KIND_PTY_MASTER && f.Pty == nil) {
				return corrupt(TreeName, "file %d: bad pty %d", f.Id, f.PtyIndex)
			}
		case imagepb.FileKind_FILE_KIND_INOTIFY:
			for _, w := range f.InotifyWatches {
				if w.Wd <= 0 || w.Path == "" {
					return corrupt(TreeName, "file %d: bad inotify watch %d", f.Id, w.Wd)
				}
			}
		case imagepb.FileKind_FILE_KIND_PIDFD:
			if !tids[f.PidfdPid] {
				return corrupt(TreeName, "file %d: pidfd of %d, not a process of the image", f.Id, f.PidfdPid)
			}
		case imagepb.FileKind_FILE_KIND_NETLINK_SOCKET:
			n := f.NetlinkSocket
			if n == nil || (n.Type != 2 && n.Type != 3) || n.Protocol < 0 || n.Protocol > 31 || len(n.Groups) > 2048 {
				return corrupt(TreeName, "file %d: bad netlink socket", f.Id)
			}
		case imagepb.FileKind_FILE_KIND_INET_SOCKET:
			in := f.InetSocket
			if in == nil || (in.Family != 2 && in.Family != 10) || (in.Protocol != 6 && in.Protocol != 17 && in.Protocol != 262) {
				return corrupt(TreeName, "file %d: bad TCP or UDP socket", f.Id)
			}
			if in.Protocol == 262 && in.State != 10 && in.State != 7 { // multipath TCP: listeners and bound sockets
				return corrupt(TreeName, "file %d: multipath TCP socket in state %d", f.Id, in.State)
			}
			if in.Protocol == 6 && (in.State == 1 || in.State == 4 || in.State == 5 || in.State == 8) && (in.Tcp == nil || in.Local == "" || in.Peer == "") {
				return corrupt(TreeName, "file %d: established TCP connection without its state", f.Id)
			}
			for _, a := range []string{in.Local, in.Peer} {
				if _, err := netip.ParseAddrPort(a); a != "" && err != nil {
					return corrupt(TreeName, "file %d: bad address %q", f.Id, a)
				}
			}
			// BPF_MAXINSNS instructions of 8 bytes; IFNAMSIZ; TCP_CA_NAME_MAX.
			if len(in.Filter)%8 != 0 || len(in.Filter) > 4096*8 || len(in.BindDevice) > 15 || len(in.Congestion) > 15 ||
				in.Shutdown > 3 || in.LingerSeconds < 0 || in.RcvTimeoutUs < 0 || in.SndTimeoutUs < 0 || len(in.Options) > 128 {
				return corrupt(TreeName, "file %d: bad socket options", f.Id)
			}
		case imagepb.FileKind_FILE_KIND_UNIX_SOCKET:
			u := f.UnixSocket
			if u == nil || (u.Type != 1 && u.Type != 2 && u.Type != 5) || (u.State != 1 && u.State != 7 && u.State != 10) || u.Shutdown > 3 {
				return corrupt(TreeName, "file %d: bad unix socket", f.Id)
			}
			// A removed name is bound again, and what is at its path moved aside for the time.
			if u.NameRemoved && (!strings.HasPrefix(u.Name, "/") || path.Clean(u.Name) != u.Name) {
				return corrupt(TreeName, "file %d: removed socket name %q", f.Id, u.Name)
			}
		case imagepb.FileKind_FILE_KIND_EPOLL:
			if len(f.EpollItems) > maxFds {
				return corrupt(TreeName, "file %d: %d epoll items", f.Id, len(f.EpollItems))
			}
			for _, it := range f.EpollItems {
				if it.Tfd < 0 {
					return corrupt(TreeName, "file %d: epoll item on fd %d", f.Id, it.Tfd)
				}
			}
		default:
			return corrupt(TreeName, "file %d: unknown kind %d", f.Id, f.Kind)
		}
		if f.Kind != imagepb.FileKind_FILE_KIND_PIPE && f.Path == "" {
			return corrupt(TreeName, "file %d: no path", f.Id)
		}
		if f.Pos < 0 {
			return corrupt(TreeName, "file %d: negative position", f.Id)
		}
		for _, l := range f.Locks {
			if (l.Kind != imagepb.LockKind_LOCK_KIND_FLOCK && l.Kind != imagepb.LockKind_LOCK_KIND_OFD) || !lockRange(l) {
				return corrupt(TreeName, "file %d: bad lock", f.Id)
			}
		}
		if f.Deleted {
			if err := c.ghostData(f.DataFile, f.Size, f.Ghost, FileDataName(f.Id)); err != nil {
				return err
			}
		}
	}
	for _, f := range t.Files {
		for _, it := range f.EpollItems {
			if it.FileId != 0 && files[it.FileId] == nil {
				return corrupt(TreeName, "file %d: epoll item on file %d, not in the image", f.Id, it.FileId)
			}
		}
		if u := f.UnixSocket; u != nil {
			if len(u.QueueFds) > len(u.Queue) || (len(u.QueueFds) > 0 && u.Type == 1) {
				return corrupt(TreeName, "file %d: fds in flight without their messages", f.Id)
			}
			for _, q := range u.QueueFds {
				for _, id := range q.FileIds {
					if files[id] == nil {
						return corrupt(TreeName, "file %d: a file in flight, %d, not in the image", f.Id, id)
					}
				}
				if len(q.FileIds) > 253 {
					return corrupt(TreeName, "file %d: more than 253 fds in one message", f.Id)
				}
			}
		}
	}
	socks := map[uint32]*imagepb.UnixSocket{}
	for _, f := range t.Files {
		if u := f.UnixSocket; u != nil {
			if socks[u.Ino] != nil {
				return corrupt(TreeName, "socket %d listed twice", u.Ino)
			}
			socks[u.Ino] = u
		}
	}
	for _, u := range socks {
		switch {
		case u.ConnectTo != "":
			if u.Type != 2 {
				return corrupt(TreeName, "socket %d: connected one way, but not a datagram socket", u.Ino)
			}
			if len(u.Queue) > 0 && u.Name == "" {
				return corrupt(TreeName, "socket %d: queued messages on an unbound socket connected one way", u.Ino)
			}
		case u.PeerIno != 0 && u.State != 10:
			if p := socks[u.PeerIno]; p == nil || p.PeerIno != u.Ino || p == u {
				return corrupt(TreeName, "socket %d: peer %d is not in the image or not connected back", u.Ino, u.PeerIno)
			}
		case len(u.Queue) > 0 && u.State != 1 && (u.Type != 2 || u.Name == ""):
			// Queued messages come from a peer, from a pair made for a peer that was gone
			// (connected state), or, for a bound datagram socket, from its name.
			return corrupt(TreeName, "socket %d: queued messages without a peer", u.Ino)
		}
	}
	saved := map[uint32]bool{}
	for _, sf := range t.SavedFiles {
		if saved[sf.Id] || sf.Id == 0 {
			return corrupt(TreeName, "saved file %d listed twice", sf.Id)
		}
		saved[sf.Id] = true
		if err := c.ghostData(sf.DataFile, sf.Size, sf.Ghost, SavedFileName(sf.Id)); err != nil {
			return err
		}
	}
	c.savedIDs = saved
	shmem := map[uint32]*imagepb.SharedMemory{}
	for _, s := range t.Shmem {
		if _, dup := shmem[s.Id]; dup {
			return corrupt(TreeName, "shared memory %d listed twice", s.Id)
		}
		shmem[s.Id] = s
		if s.Size%pageSize != 0 || s.Size > taskSizeMax {
			return corrupt(TreeName, "shared memory %d: size %d", s.Id, s.Size)
		}
		n, err := checkRuns(TreeName, s.Runs, func(lo, hi uint64) bool { return hi <= s.Size })
		if err != nil {
			return err
		}
		for _, r := range s.Runs {
			if r.InParent {
				return corrupt(TreeName, "shared memory %d: a run in the parent image (shared memory is always dumped whole)", s.Id)
			}
		}
		if err := c.pagesFile(s.PagesFile, n, ShmemName(s.Id)); err != nil {
			return err
		}
	}
	sysv := map[int32]bool{}
	for _, s := range t.SysvShm {
		if sysv[s.Id] || s.Id < 0 || shmem[s.ShmemId] == nil || s.Size == 0 || s.Size > 1<<40 {
			return corrupt(TreeName, "System V shm %d: repeated, without content or of size %d", s.Id, s.Size)
		}
		sysv[s.Id] = true
	}
	for _, pe := range t.Processes {
		if pe.Zombie {
			continue
		}
		if err := c.validateProcess(pe, files, shmem); err != nil {
			return err
		}
	}
	return nil
}

// dataFile checks that a raw data file is the one expected for the object and has size bytes.
// ghostData checks a deleted file's data file: its whole content, or its data ranges in
// order, inside its size.
func (c *Checkpoint) ghostData(name string, size uint64, g *imagepb.Ghost, want string) error {
	if g == nil || !g.Sparse {
		return c.dataFile(name, size, want)
	}
	var end, sum uint64
	for _, e := range g.Extents {
		if e.Length == 0 || e.Offset < end || e.Offset > size || e.Length > size-e.Offset {
			return corrupt(TreeName, "%s: bad data range %d+%d", want, e.Offset, e.Length)
		}
		end, sum = e.Offset+e.Length, sum+e.Length
	}
	return c.dataFile(name, sum, want)
}

func (c *Checkpoint) dataFile(name string, size uint64, want string) error {
	if size == 0 && name == "" {
		return nil
	}
	if name != want {
		return corrupt(TreeName, "data file %q, expected %q", name, want)
	}
	e, ok := c.entries[name]
	if !ok {
		return corrupt(name, "not listed in %s", IndexName)
	}
	held := e.Size
	if e.Compression == imagepb.Compression_COMPRESSION_ZSTD {
		held = e.RawSize
	}
	if held != size {
		return corrupt(name, "holds %d bytes, metadata says %d", held, size)
	}
	return nil
}

func (c *Checkpoint) pagesFile(name string, pages uint64, want string) error {
	if c.Index.Kind == imagepb.Kind_KIND_CHECK_ONLY {
		if name != "" {
			return corrupt(want, "page file in a check-only image")
		}
		return nil
	}
	return c.dataFile(name, pages*pageSize, want)
}

// checkRuns checks page runs: page-aligned, ascending, not overlapping, each inside what
// inside accepts, and returns the number of pages.
func checkRuns(file string, runs []*imagepb.PageRun, inside func(lo, hi uint64) bool) (uint64, error) {
	var total, last uint64
	for i, r := range runs {
		if r.Vaddr%pageSize != 0 || r.NrPages == 0 || r.NrPages > taskSizeMax/pageSize {
			return 0, corrupt(file, "page run %d: bad address %#x or count %d", i, r.Vaddr, r.NrPages)
		}
		end := r.Vaddr + r.NrPages*pageSize
		if end < r.Vaddr || (i > 0 && r.Vaddr < last) {
			return 0, corrupt(file, "page run %d at %#x overlaps or is out of order", i, r.Vaddr)
		}
		if !inside(r.Vaddr, end) {
			return 0, corrupt(file, "page run %d at %#x (%d pages) is outside its memory", i, r.Vaddr, r.NrPages)
		}
		last = end
		if !r.InParent {
			total += r.NrPages
		}
	}
	return total, nil
}

func (c *Checkpoint) validateProcess(pe *imagepb.ProcessEntry, files map[uint32]*imagepb.OpenFile, shmem map[uint32]*imagepb.SharedMemory) error {
	name := ProcName(pe.Pid)
	p := c.Procs[pe.Pid]
	if p.Pid != pe.Pid {
		return corrupt(name, "holds process %d", p.Pid)
	}
	if p.Regs == nil || p.Mm == nil || p.Creds == nil {
		return corrupt(name, "registers, mm or credentials missing")
	}
	if uint32(len(p.Xstate)) != c.Tree.Cpu.XstateSize {
		return corrupt(name, "XSTATE of %d bytes, tree says %d", len(p.Xstate), c.Tree.Cpu.XstateSize)
	}
	if !validSched(p.Sched) {
		return corrupt(name, "bad scheduling policy, nice value, priority or CPU mask")
	}
	for _, cg := range p.Cgroups {
		// The restore makes these directories under the cgroup mounts: no way out of them.
		if !strings.HasPrefix(cg.Path, "/") || strings.ContainsAny(cg.Path+cg.Controllers, "\x00") || strings.Contains(cg.Controllers, "/") ||
			slices.Contains(strings.Split(cg.Path, "/"), "..") {
			return corrupt(name, "bad cgroup %q:%q", cg.Controllers, cg.Path)
		}
	}
	if p.Dumpable < 0 || p.Dumpable > 2 {
		return corrupt(name, "dumpable %d", p.Dumpable)
	}
	// A removed working directory is made again, and removed, by the restore.
	if p.CwdRemoved != nil && (!strings.HasPrefix(p.Cwd, "/") || path.Clean(p.Cwd) != p.Cwd || p.Cwd == "/" || strings.Contains(p.Cwd, "\x00")) {
		return corrupt(name, "bad removed working directory %q", p.Cwd)
	}
	tids := map[int32]bool{p.Pid: true}
	for _, th := range p.Threads {
		if th.Tid <= 0 || tids[th.Tid] {
			return corrupt(name, "thread %d: bad or repeated tid", th.Tid)
		}
		tids[th.Tid] = true
		if th.Regs == nil || uint32(len(th.Xstate)) != c.Tree.Cpu.XstateSize {
			return corrupt(name, "thread %d: registers missing or XSTATE of %d bytes", th.Tid, len(th.Xstate))
		}
		if !validSched(th.Sched) {
			return corrupt(name, "thread %d: bad scheduling policy, nice value, priority or CPU mask", th.Tid)
		}
		if c := th.Creds; c != nil && (len(c.Uids) != 4 || len(c.Gids) != 4 || len(c.Groups) > 65536) {
			return corrupt(name, "thread %d: bad credentials", th.Tid)
		}
		for _, si := range th.Pending {
			if si.Signo < 1 || si.Signo > maxSig || len(si.Info) != 128 {
				return corrupt(name, "thread %d: bad pending signal %d", th.Tid, si.Signo)
			}
		}
	}
	if len(pe.Threads) != len(tids) {
		return corrupt(name, "%d threads, tree says %d", len(tids), len(pe.Threads))
	}
	for _, tid := range pe.Threads {
		if !tids[tid] {
			return corrupt(name, "thread %d of the tree is missing", tid)
		}
	}
	seen := map[int32]bool{}
	for _, sa := range p.Sigactions {
		if sa.Signo < 1 || sa.Signo > maxSig || sa.Signo == 9 || sa.Signo == 19 || seen[sa.Signo] {
			return corrupt(name, "bad or repeated signal action for %d", sa.Signo)
		}
		seen[sa.Signo] = true
	}
	for _, si := range p.Pending {
		if si.Signo < 1 || si.Signo > maxSig || len(si.Info) != 128 {
			return corrupt(name, "bad pending signal %d", si.Signo)
		}
	}
	for _, f := range p.SeccompFilters {
		if len(f) == 0 || len(f)%8 != 0 || len(f) > 4096*8 {
			return corrupt(name, "seccomp filter of %d bytes", len(f))
		}
	}
	for _, pt := range p.PosixTimers {
		if pt.Id < 0 || pt.Signo < 0 || pt.Signo > maxSig || (pt.Notify != 0 && pt.Notify != 1 && pt.Notify != 4) || pt.ValueNs < 0 || pt.IntervalNs < 0 {
			return corrupt(name, "bad POSIX timer %d", pt.Id)
		}
	}
	for _, it := range p.Itimers {
		if it.Which < 0 || it.Which > 2 || it.IntervalUsec < 0 || it.ValueUsec < 0 {
			return corrupt(name, "bad interval timer %d", it.Which)
		}
	}
	if p.Mm.ExeSavedFileId != 0 && !c.savedIDs[p.Mm.ExeSavedFileId] {
		return corrupt(name, "binary: saved file %d not in the image", p.Mm.ExeSavedFileId)
	}
	if len(p.Mm.Auxv)%16 != 0 || len(p.Mm.Auxv) > maxAuxv {
		return corrupt(name, "auxv of %d bytes", len(p.Mm.Auxv))
	}
	for _, r := range p.Rlimits {
		if r.Resource < 0 || r.Resource > 15 {
			return corrupt(name, "bad rlimit %d", r.Resource)
		}
	}
	if len(p.Creds.Uids) != 4 || len(p.Creds.Gids) != 4 || len(p.Creds.Groups) > 65536 {
		return corrupt(name, "bad credentials")
	}
	var last uint64
	for i, v := range p.Vmas {
		if v.Kind == imagepb.VMAKind_VMA_KIND_VSYSCALL {
			continue
		}
		if v.Start%pageSize != 0 || v.End%pageSize != 0 || v.Start >= v.End || v.End > taskSizeMax || v.Start < last {
			return corrupt(name, "mapping %d %#x-%#x is misaligned, out of order or out of range", i, v.Start, v.End)
		}
		if v.Kind <= imagepb.VMAKind_VMA_KIND_UNSPECIFIED || v.Kind > imagepb.VMAKind_VMA_KIND_PLUGIN {
			return corrupt(name, "mapping %#x: unknown kind %d", v.Start, v.Kind)
		}
		if v.Prot&^7 != 0 || v.Pgoff%pageSize != 0 {
			return corrupt(name, "mapping %#x: bad protection or offset", v.Start)
		}
		if v.Kind == imagepb.VMAKind_VMA_KIND_PLUGIN {
			found := false
			for _, n := range c.Tree.Plugins {
				found = found || n == v.Plugin
			}
			if !found {
				return corrupt(name, "mapping %#x: plugin %q not listed", v.Start, v.Plugin)
			}
		}
		if v.Kind == imagepb.VMAKind_VMA_KIND_SYSV_SHM {
			found := false
			for _, s := range c.Tree.SysvShm {
				found = found || (s.Id == v.SysvShmId && shmem[s.ShmemId] != nil && v.Pgoff+(v.End-v.Start) <= s.Size+pageSize)
			}
			if !found {
				return corrupt(name, "mapping %#x: System V shm %d not in the image", v.Start, v.SysvShmId)
			}
		}
		if v.Kind == imagepb.VMAKind_VMA_KIND_ANON_SHARED {
			s := shmem[v.ShmemId]
			if s == nil || v.Pgoff+(v.End-v.Start) > s.Size {
				return corrupt(name, "mapping %#x: shared memory %d missing or too small", v.Start, v.ShmemId)
			}
		}
		if (v.Kind == imagepb.VMAKind_VMA_KIND_FILE_PRIVATE || v.Kind == imagepb.VMAKind_VMA_KIND_FILE_SHARED) && v.Path == "" {
			return corrupt(name, "mapping %#x: file mapping without a path", v.Start)
		}
		if v.SavedFileId != 0 && !c.savedIDs[v.SavedFileId] {
			return corrupt(name, "mapping %#x: saved file %d not in the image", v.Start, v.SavedFileId)
		}
		last = v.End
	}
	vmas := p.Vmas
	// A run may span adjacent mappings, each of a kind that holds pages.
	n, err := checkRuns(name, p.Pages, func(lo, hi uint64) bool {
		i := sort.Search(len(vmas), func(i int) bool { return vmas[i].End > lo })
		for ; i < len(vmas) && vmas[i].Start <= lo; i++ {
			switch vmas[i].Kind {
			case imagepb.VMAKind_VMA_KIND_ANON_PRIVATE, imagepb.VMAKind_VMA_KIND_FILE_PRIVATE,
				imagepb.VMAKind_VMA_KIND_HEAP, imagepb.VMAKind_VMA_KIND_STACK:
			default:
				return false
			}
			if hi <= vmas[i].End {
				return true
			}
			lo = vmas[i].End
		}
		return false
	})
	if err != nil {
		return err
	}
	for _, r := range p.Pages {
		if r.InParent && c.Index.Parent == "" {
			return corrupt(name, "page run %#x in a parent image, but the image has none", r.Vaddr)
		}
	}
	if err := c.pagesFile(p.PagesFile, n, PagesName(p.Pid)); err != nil {
		return err
	}
	if len(p.Fds) > maxFds {
		return corrupt(name, "%d fds", len(p.Fds))
	}
	fds := map[int32]bool{}
	for _, fd := range p.Fds {
		if fd.Fd < 0 || fds[fd.Fd] || files[fd.FileId] == nil {
			return corrupt(name, "fd %d: repeated or refers to no file", fd.Fd)
		}
		fds[fd.Fd] = true
	}
	if len(p.Locks) > maxFds {
		return corrupt(name, "%d locks", len(p.Locks))
	}
	for _, l := range p.Locks {
		if l.Kind != imagepb.LockKind_LOCK_KIND_POSIX || !fds[l.Fd] || !lockRange(l) {
			return corrupt(name, "lock through fd %d: not a POSIX lock, on no fd, or a bad range", l.Fd)
		}
	}
	return nil
}

// validSched says whether a thread's scheduling state is one the kernel could have reported.
func validSched(s *imagepb.Sched) bool {
	if s == nil {
		return true
	}
	switch s.Policy {
	case 0, 1, 2, 3, 5, 6:
	default:
		return false
	}
	return s.Nice >= -20 && s.Nice <= 19 && s.Priority <= 99 && len(s.Affinity)%8 == 0 && len(s.Affinity) <= 1024
}

// lockRange says whether a lock's byte range is one a kernel could have granted.
func lockRange(l *imagepb.FileLock) bool {
	return l.Start >= 0 && (l.End == -1 || l.End >= l.Start)
}
