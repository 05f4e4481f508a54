package core

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/netlock"
	"github.com/gocr/gocr/core/internal/pluginhost"
	"github.com/gocr/gocr/core/internal/procfs"
)

// fileTable gathers the open file descriptions of the whole dump. Each is known by a dup of
// it in gocr (pidfd_getfd), so two fds share one description exactly when kcmp says so.
type fileTable struct {
	// host carries calls to plugins, which may claim files (nil: no plugins).
	host *pluginhost.Host
	ctx  context.Context
	used map[string]bool // plugins that claimed a file
	// tcpEstablished allows established TCP connections (taken in repair mode).
	tcpEstablished bool
	// skipInFlight lets listeners with connections not accepted yet be dumped without them.
	skipInFlight bool
	// ghostLimit bounds the deleted files saved in the image (0: no bound).
	ghostLimit int64
	// linkRemap allows files whose name was removed, but that have other names, to be taken
	// through a hard link made for them (CRIU's --link-remap).
	linkRemap bool
	remaps    []string // the links made (removed again if the dump fails)
	// repaired are our dups of sockets left in TCP repair mode by the dump.
	repaired []repairedSocket
	// peeked are gocr's fds of files in flight in unix sockets' queues.
	peeked []int
	// diags are what sock_diag tells of the TCP and UDP sockets, by family and protocol, then
	// inode (read once, when the first socket of the kind is met).
	diags map[[2]int]map[uint32]linux.InetDiag
	// lock is the network lock holding the connections' packets back ("" until one is
	// taken); see package netlock. lockErr says why there is none where nftables cannot be
	// used here.
	lock    string
	lockErr error
	// netns is the tree's network namespace (/proc/PID/ns/net) when it has one of its own,
	// and inNetns runs a function on a thread inside it (nil: gocr's own).
	netns   string
	inNetns func(func() error) error
	byIno   map[[2]uint64][]*openFile
	pipes   map[uint64]*pipeDump // by inode
	all     []*openFile
}

type openFile struct {
	img       *imagepb.OpenFile
	epollInos []uint64 // an epoll's: the inode of each watched file, as the items are
	dup       int      // our dup of it; never read from or seeked
	pid       int      // a process that has it open, and its fd there
	fd        int
}

type pipeDump struct {
	img  *imagepb.Pipe
	data []byte
	read bool // data was taken
}

func newFileTable() *fileTable {
	return &fileTable{byIno: map[[2]uint64][]*openFile{}, pipes: map[uint64]*pipeDump{}}
}

// claimed hands a file a plugin claims to that plugin's DumpFile. It returns nil, nil for a
// file no plugin claims. A claimed file is one fd: it is not matched with other fds.
func (ft *fileTable) claimed(pid, fd int, link string, info *procfs.FdInfo, st linux.Stat, dup int) (*openFile, error) {
	isChar := st.Mode&linux.SIFMT == linux.SIFCHR
	p, err := ft.host.Claim(link, uint32((st.Rdev>>8)&0xfff), isChar)
	if err != nil {
		linux.Close(dup)
		return nil, err
	}
	if p == nil {
		return nil, nil
	}
	const oCloexec = 0o2000000
	flags := info.Flags &^ oCloexec
	blob, err := ft.host.DumpFile(ft.ctx, p, pluginhost.File{Pid: pid, Fd: fd, Path: link, Flags: flags, Pos: info.Pos, Rdev: st.Rdev})
	if err != nil {
		linux.Close(dup)
		return nil, err
	}
	f := &openFile{dup: dup, pid: pid, fd: fd, img: &imagepb.OpenFile{
		Id: uint32(len(ft.all) + 1), Kind: imagepb.FileKind_FILE_KIND_PLUGIN, Path: link, Flags: flags, Pos: info.Pos,
		Dev: st.Dev, Ino: st.Ino, Rdev: st.Rdev, Mode: st.Mode, Plugin: p.Name, PluginBlob: blob, PluginPid: int32(pid), PluginFd: int32(fd),
	}}
	ft.all = append(ft.all, f)
	ft.markUsed(p.Name)
	return f, nil
}

// markUsed notes that plugin name handled something: the image needs it.
func (ft *fileTable) markUsed(name string) {
	if ft.used == nil {
		ft.used = map[string]bool{}
	}
	ft.used[name] = true
}

// pluginsUsed lists the plugins that claimed a file: the image needs them.
func (ft *fileTable) pluginsUsed() []string {
	out := make([]string, 0, len(ft.used))
	for n := range ft.used {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// repairOff takes the sockets out of repair mode, and then lets their packets in again: the
// processes go on using them.
func (ft *fileTable) repairOff() {
	for _, r := range ft.repaired {
		linux.TCPRepairOffQuiet(r.fd)
		linux.AfterRepair(r.fd, r.reuseAddr) // the processes go on with their option
	}
	ft.repaired = nil
	if ft.lock != "" {
		netlock.Unlock(ft.netns, ft.lock)
	}
}

func (ft *fileTable) close() {
	for _, f := range ft.all {
		if f.dup >= 0 {
			linux.Close(f.dup)
			f.dup = -1
		}
	}
	for _, fd := range ft.peeked {
		linux.Close(fd)
	}
	ft.peeked = nil
}

// Character devices the core reopens by path: the memory devices (/dev/null, /dev/zero...)
// and terminals. Anything else is a device a plugin must handle.
func reopenableCharDev(rdev uint64) bool {
	major, minor := (rdev>>8)&0xfff, (rdev&0xff)|((rdev>>12)&0xfff00)
	switch {
	case major == 5 && minor == 2:
		return false // /dev/ptmx: a pty master, handled as such
	case major == 1, major == 4, major == 5, major >= 136 && major <= 143:
		return true
	}
	return false
}

// collectFiles records every fd of the process.
func (d *dumper) collectFiles(p *procDump) error {
	pid := p.t.Pid
	pidfd, err := linux.PidfdOpen(pid)
	if err != nil {
		return err
	}
	defer linux.Close(pidfd)
	fds, err := procfs.Fds(pid)
	if err != nil {
		return fmt.Errorf("list fds: %w", err)
	}
	for _, fd := range fds {
		if p.isTracker(fd) {
			continue // gocr's memory tracker, not the process's
		}
		info, err := procfs.ReadFdInfo(pid, fd)
		if err != nil {
			return fmt.Errorf("fd %d: read fdinfo: %w", fd, err)
		}
		f, cloexec, err := d.files.add(pid, pidfd, fd, info)
		var ue *UnsupportedError
		if errors.As(err, &ue) {
			return err
		}
		if err != nil {
			return fmt.Errorf("fd %d: %w", fd, err)
		}
		p.img.Fds = append(p.img.Fds, &imagepb.Fd{Fd: int32(fd), FileId: f.img.Id, Cloexec: cloexec})
		for _, l := range info.Locks {
			if err := recordLock(p.img, f.img, fd, l); err != nil {
				return err
			}
		}
	}
	return nil
}

// recordLock keeps a lock granted through fd: a POSIX lock belongs to the process, a flock
// or OFD lock to the open file description (and shows on every fd of it, in every process).
func recordLock(proc *imagepb.Process, f *imagepb.OpenFile, fd int, l procfs.Lock) error {
	lk := &imagepb.FileLock{Write: l.Write, Start: l.Start, End: l.End}
	switch l.Kind {
	case "FLOCK":
		lk.Kind, lk.Start, lk.End = imagepb.LockKind_LOCK_KIND_FLOCK, 0, -1
	case "OFDLCK":
		lk.Kind = imagepb.LockKind_LOCK_KIND_OFD
	case "POSIX":
		lk.Kind = imagepb.LockKind_LOCK_KIND_POSIX
		for _, have := range proc.Locks {
			if have.Start == lk.Start && have.End == lk.End && have.Write == lk.Write && fileOfFd(proc, have.Fd) == f.Id {
				return nil // the same lock seen through a dup of the fd
			}
		}
		lk.Fd = int32(fd)
		proc.Locks = append(proc.Locks, lk)
		return nil
	default:
		return &UnsupportedError{Pid: int(proc.Pid), What: "fd " + strconv.Itoa(fd), Kind: fmt.Sprintf("a file lock of kind %s on %s", l.Kind, f.Path),
			Hint: "flock, POSIX and OFD locks are handled; leases are not"}
	}
	for _, have := range f.Locks {
		if have.Kind == lk.Kind && have.Start == lk.Start && have.End == lk.End && have.Write == lk.Write {
			return nil
		}
	}
	f.Locks = append(f.Locks, lk)
	return nil
}

func fileOfFd(proc *imagepb.Process, fd int32) uint32 {
	for _, f := range proc.Fds {
		if f.Fd == fd {
			return f.FileId
		}
	}
	return 0
}

func (ft *fileTable) add(pid, pidfd, fd int, info *procfs.FdInfo) (*openFile, bool, error) {
	link, err := procfs.Link(pid, "fd/"+strconv.Itoa(fd))
	if err != nil {
		return nil, false, err
	}
	unsupported := func(kind, hint string) error {
		return &UnsupportedError{Pid: pid, What: "fd " + strconv.Itoa(fd), Kind: kind, Hint: hint}
	}
	switch {
	case strings.HasPrefix(link, "socket:"):
	case link == "anon_inode:[eventfd]", link == "anon_inode:[eventpoll]", link == "anon_inode:[timerfd]",
		link == "anon_inode:[signalfd]", link == "anon_inode:inotify", link == "anon_inode:[pidfd]":
	case strings.HasPrefix(link, "anon_inode:"):
		return nil, false, unsupported(strings.TrimPrefix(link, "anon_inode:"), "")
	}
	dup, err := linux.PidfdGetfd(pidfd, fd)
	if err != nil {
		return nil, false, err
	}
	st, err := linux.Fstat(dup)
	if err != nil {
		linux.Close(dup)
		return nil, false, err
	}
	const oCloexec = 0o2000000
	cloexec := info.Flags&oCloexec != 0
	if f, err := ft.claimed(pid, fd, link, info, st, dup); f != nil || err != nil {
		return f, cloexec, err
	}
	// The descriptions of one inode are kept in kcmp order: a dup of a known description is
	// found by binary search, so a thousand fds on one file need thousands of kcmp calls,
	// not half a million.
	key := [2]uint64{st.Dev, st.Ino}
	known := ft.byIno[key]
	var cmpErr error
	at := sort.Search(len(known), func(i int) bool {
		c, err := linux.CompareFiles(known[i].dup, dup)
		if err != nil && cmpErr == nil {
			cmpErr = err
		}
		return c >= 0
	})
	if cmpErr != nil {
		linux.Close(dup)
		return nil, false, cmpErr
	}
	if at < len(known) {
		if c, err := linux.CompareFiles(known[at].dup, dup); err == nil && c == 0 {
			linux.Close(dup)
			return known[at], cloexec, nil
		}
	}
	f := &openFile{dup: dup, pid: pid, fd: fd, img: &imagepb.OpenFile{
		Id: uint32(len(ft.all) + 1), Path: link, Flags: info.Flags &^ oCloexec, Pos: info.Pos,
		Dev: st.Dev, Ino: st.Ino, Rdev: st.Rdev, Mode: st.Mode, Size: uint64(st.Size),
	}}
	ft.all = append(ft.all, f)
	ft.byIno[key] = append(known[:at:at], append([]*openFile{f}, known[at:]...)...)
	// The owner's pid is checked and made the image's once every process is collected.
	if o, err := linux.GetOwner(dup); err != nil && !errors.Is(err, linux.EBADF) { // O_PATH: none
		return nil, false, err
	} else if o.Pid != 0 || o.Signal != 0 {
		f.img.Owner = &imagepb.FileOwner{Type: int32(o.Type), Pid: int32(o.Pid), Signal: int32(o.Signal)}
	}
	if info.Flags&linux.OPath != 0 {
		// Only a path: opened again by it, whatever the file is.
		if st.Nlink == 0 && st.Mode&linux.SIFMT != linux.SIFDIR {
			return nil, false, unsupported("O_PATH fd of the deleted file "+link, "")
		}
		f.img.Kind = imagepb.FileKind_FILE_KIND_OPATH
		return f, cloexec, nil
	}
	switch {
	case link == "anon_inode:[eventfd]":
		f.img.Kind = imagepb.FileKind_FILE_KIND_EVENTFD
		f.img.EventfdCount, f.img.EventfdSemaphore = info.EventfdCount, info.EventfdSemaphore
		return f, cloexec, nil
	case link == "anon_inode:[eventpoll]":
		f.img.Kind = imagepb.FileKind_FILE_KIND_EPOLL
		for _, it := range info.Epoll {
			f.img.EpollItems = append(f.img.EpollItems, &imagepb.EpollItem{Tfd: int32(it.Tfd), Events: it.Events, Data: it.Data})
			f.epollInos = append(f.epollInos, it.Ino)
		}
		return f, cloexec, nil
	case link == "anon_inode:[timerfd]":
		f.img.Kind = imagepb.FileKind_FILE_KIND_TIMERFD
		f.img.Timerfd = &imagepb.Timerfd{Clockid: int32(info.ClockID), Ticks: info.Ticks, ValueNs: info.ValueNs, IntervalNs: info.IntervalNs}
		return f, cloexec, nil
	case link == "anon_inode:[signalfd]":
		f.img.Kind = imagepb.FileKind_FILE_KIND_SIGNALFD
		f.img.SignalfdMask = info.SigMask
		return f, cloexec, nil
	case link == "anon_inode:[pidfd]":
		// Whether the process is one of the dumped trees is checked once all are collected.
		if info.PidfdPid <= 0 {
			return nil, false, unsupported("pidfd of a process that has exited or lives in another pid namespace", "")
		}
		f.img.Kind, f.img.PidfdPid = imagepb.FileKind_FILE_KIND_PIDFD, int32(info.PidfdPid)
		return f, cloexec, nil
	case link == "anon_inode:inotify":
		f.img.Kind = imagepb.FileKind_FILE_KIND_INOTIFY
		for _, w := range info.Inotify {
			path, err := linux.WatchPath(w.Sdev, w.HandleType, w.Handle)
			if err != nil {
				return nil, false, fmt.Errorf("inotify watch %d: find its file: %w", w.Wd, err)
			}
			f.img.InotifyWatches = append(f.img.InotifyWatches, &imagepb.InotifyWatch{Wd: int32(w.Wd), Mask: w.Mask, Path: path})
		}
		return f, cloexec, nil
	case strings.HasPrefix(link, "/memfd:"):
		f.img.Kind = imagepb.FileKind_FILE_KIND_MEMFD
		f.img.MemfdName = strings.TrimSuffix(strings.TrimPrefix(link, "/memfd:"), " (deleted)")
		seals, err := linux.Seals(dup)
		if err != nil {
			return nil, false, err
		}
		f.img.MemfdSeals = uint32(seals)
		f.img.Deleted = true // its content is saved like a deleted file's
		return f, cloexec, nil
	case strings.HasPrefix(link, "socket:"):
		err := ft.inetSocket(f, unsupported)
		if errors.Is(err, linux.ErrNotInet) {
			err = netlinkSocket(f)
		}
		if errors.Is(err, linux.ErrNotNetlink) {
			err = ft.unixSocket(f, uint32(st.Ino), unsupported)
		}
		if err != nil {
			return nil, false, err
		}
		return f, cloexec, nil
	}
	switch st.Mode & linux.SIFMT {
	case linux.SIFREG:
		f.img.Kind = imagepb.FileKind_FILE_KIND_REGULAR
		if st.Nlink == 0 {
			f.img.Deleted = true
			f.img.Path = strings.TrimSuffix(link, " (deleted)")
			if err := ft.ghostCheck(f.img.Path, st.Size, unsupported); err != nil {
				return nil, false, err
			}
		} else if p, ok := strings.CutSuffix(link, " (deleted)"); ok {
			// Its name was removed, but other names lead to it: its content is not saved
			// (the restored file must be the same one), it is reached through a link.
			if !ft.linkRemap {
				return nil, false, unsupported(fmt.Sprintf("file %s, its name removed while %d other links remain", p, st.Nlink),
					"dump with --link-remap: a hard link to it is made next to it, and removed at restore")
			}
			remap, err := linkRemap(pid, fd, p, st)
			if err != nil {
				return nil, false, fmt.Errorf("link-remap %s: %w", p, err)
			}
			ft.remaps = append(ft.remaps, remap)
			f.img.Path, f.img.LinkRemap = remap, true
		}
	case linux.SIFDIR:
		f.img.Kind = imagepb.FileKind_FILE_KIND_DIRECTORY
	case linux.SIFCHR:
		if major, minor := (st.Rdev>>8)&0xfff, (st.Rdev&0xff)|((st.Rdev>>12)&0xfff00); major == 5 && minor == 2 {
			ps, err := linux.InspectPtyMaster(dup)
			if err != nil {
				return nil, false, fmt.Errorf("pty master: %w", err)
			}
			f.img.Kind, f.img.PtyIndex = imagepb.FileKind_FILE_KIND_PTY_MASTER, int32(ps.Index)
			f.img.Pty = &imagepb.Pty{Termios: ps.Termios, Rows: uint32(ps.Rows), Cols: uint32(ps.Cols), Locked: ps.Locked, PacketMode: ps.Packet}
			if ps.Slave != nil {
				f.img.Pty.HasOwner, f.img.Pty.Uid, f.img.Pty.Gid, f.img.Pty.Mode = true, ps.Slave.Uid, ps.Slave.Gid, ps.Slave.Mode&0o7777
			}
			break
		} else if major >= 136 && major <= 143 {
			// A pty slave: a pair of the tree's own if its master is dumped too (fixPtys).
			f.img.PtyIndex = int32((major-136)*256 + minor)
			if p, ok := strings.CutSuffix(link, " (deleted)"); ok {
				// Its master was closed: the /dev/pts entry is gone, the fd is hung up.
				f.img.Path, f.img.Deleted = p, true
			}
		}
		if !reopenableCharDev(st.Rdev) {
			return nil, false, unsupported("character device "+link, "devices other than /dev/null-like ones and terminals need a plugin")
		}
		f.img.Kind = imagepb.FileKind_FILE_KIND_CHAR_DEVICE
	case linux.SIFIFO:
		f.img.Kind = imagepb.FileKind_FILE_KIND_FIFO
		if strings.HasPrefix(link, "pipe:") {
			f.img.Kind = imagepb.FileKind_FILE_KIND_PIPE
			f.img.Path = ""
		}
		pd, err := ft.pipe(pid, fd, dup, st.Ino, info.Flags)
		if err != nil {
			return nil, false, err
		}
		f.img.PipeId = pd.img.Id
	case linux.SIFBLK:
		return nil, false, unsupported("block device "+link, "an fd on a block device needs a plugin; mappings of one: gocr --plugin devmap")
	default:
		return nil, false, unsupported(fmt.Sprintf("file %s of type %#o", link, st.Mode&linux.SIFMT), "")
	}
	return f, cloexec, nil
}

// inetSocket records a TCP or UDP socket: listening, bound or (UDP) connected. It returns
// linux.ErrNotInet for other sockets.
func (ft *fileTable) inetSocket(f *openFile, unsupported func(kind, hint string) error) error {
	s, err := linux.InspectInet(f.dup)
	if errors.Is(err, linux.ErrBPFFilter) {
		return unsupported("socket "+f.img.Path+" with an eBPF filter", "only classic BPF filters (SO_ATTACH_FILTER) can be read back")
	}
	if err != nil {
		return err
	}
	if s.State == 7 || s.State == linux.TCPSynSent || linux.IsUDP(s.Protocol) {
		// Connections in other states are not shut down, and have their peer.
		d, err := ft.inetDiag(s.Family, s.Protocol, uint32(f.img.Ino))
		if err != nil {
			return fmt.Errorf("socket %s: %w", f.img.Path, err)
		}
		s.Shutdown = d.Shutdown
		if s.State == linux.TCPSynSent {
			s.Peer = d.Peer
		}
	}
	switch {
	case linux.IsTCP(s.Protocol) && s.State == 10 && s.Pending > 0 && !ft.skipInFlight:
		return unsupported(fmt.Sprintf("listening TCP socket %s with %d connections not accepted yet", s.Local, s.Pending), inFlightHint)
	case s.Protocol == linux.IPProtoMPTCP && s.State != 10 && s.State != 7:
		return unsupported(fmt.Sprintf("multipath TCP connection %s -> %s", s.Local, s.Peer),
			"an MPTCP connection cannot be taken by TCP repair; listeners and their plain-TCP connections can. For a Go program: GODEBUG=multipathtcp=0, or dial without MPTCP")
	case linux.IsTCP(s.Protocol) && s.Ended:
		return unsupported(fmt.Sprintf("TCP socket %s whose connection has ended (closed or reset, the fd still open)", s.Local),
			"the restore would make a socket that was never connected; close it before the dump")
	case s.State == linux.TCPSynSent && (!s.Peer.IsValid() || s.Peer.Port() == 0):
		return unsupported(fmt.Sprintf("connecting TCP socket %s whose peer sock_diag does not give", s.Local), "")
	case s.Protocol == 6 && s.State != 10 && s.State != 7 && s.State != 1 && s.State != linux.TCPSynSent && !halfClosed(s.State):
		return unsupported(fmt.Sprintf("TCP connection %s -> %s in state %d", s.Local, s.Peer, s.State), "only listening, bound and established TCP sockets are handled")
	}
	in := inetToImage(s)
	if s.Protocol == 6 && (s.State == 1 || halfClosed(s.State)) {
		// Nothing may reach the socket from now on: not while its queues are read, and not
		// once it is gone with a killed tree (the kernel would answer with a reset).
		if ft.lock == "" && ft.lockErr == nil {
			ft.lock = netlock.NewName()
		}
		if ft.lock != "" {
			if err := netlock.Lock(ft.netns, ft.lock, []netlock.Conn{{Local: s.Local, Peer: s.Peer}}); errors.Is(err, netlock.ErrUnavailable) {
				// No nftables here (a kernel without it, a container without
				// CAP_NET_ADMIN): go on without, and say so.
				netlock.Unlock(ft.netns, ft.lock)
				ft.lock, ft.lockErr = "", err
			} else if err != nil {
				return fmt.Errorf("take TCP connection %s -> %s: %w", s.Local, s.Peer, err)
			}
		}
		c, err := linux.TCPDumpConn(f.dup)
		if err != nil {
			return fmt.Errorf("take TCP connection %s -> %s: %w", s.Local, s.Peer, err)
		}
		ft.repaired = append(ft.repaired, repairedSocket{f.dup, s.Opts["SO_REUSEADDR"]})
		in.Tcp = &imagepb.TCPConn{SendSeq: c.SendSeq, RecvSeq: c.RecvSeq, SendQueue: c.SendQueue, RecvQueue: c.RecvQueue,
			Mss: c.MSS, SndWscale: uint32(c.SndWscale), RcvWscale: uint32(c.RcvWscale), Timestamps: c.Timestamps, Sack: c.Sack,
			Tsval: c.TSVal, SndWl1: c.Window.SndWl1, SndWnd: c.Window.SndWnd, MaxWindow: c.Window.MaxWindow,
			RcvWnd: c.Window.RcvWnd, RcvWup: c.Window.RcvWup}
		// A FIN takes one sequence number: the connection is made before it (see TCPConn).
		switch s.State {
		case linux.TCPFinWait1, linux.TCPFinWait2:
			in.Tcp.SendSeq--
			in.Tcp.FinSent = true
		case linux.TCPCloseWait:
			in.Tcp.RecvSeq--
			in.Tcp.FinReceived = true
			// The window was last advertised at most up to the new rcv_nxt.
			if int32(in.Tcp.RcvWup-in.Tcp.RecvSeq) > 0 {
				in.Tcp.RcvWup = in.Tcp.RecvSeq
			}
		}
	}
	f.img.Kind = imagepb.FileKind_FILE_KIND_INET_SOCKET
	f.img.InetSocket = in
	return nil
}

// ghostCheck refuses a deleted file larger than the ghost limit.
func (ft *fileTable) ghostCheck(path string, size int64, unsupported func(kind, hint string) error) error {
	if ft.ghostLimit > 0 && size > ft.ghostLimit {
		return unsupported(fmt.Sprintf("deleted file %s of %d bytes", path, size),
			fmt.Sprintf("its content would go into the image; --ghost-limit is %d bytes: raise it to take it", ft.ghostLimit))
	}
	return nil
}

// netlinkSocket records a netlink socket; it returns linux.ErrNotNetlink for other sockets.
func netlinkSocket(f *openFile) error {
	s, err := linux.InspectNetlink(f.dup)
	if err != nil {
		return err
	}
	f.img.Kind = imagepb.FileKind_FILE_KIND_NETLINK_SOCKET
	f.img.NetlinkSocket = &imagepb.NetlinkSocket{Type: int32(s.Type), Protocol: int32(s.Protocol), Portid: s.Portid,
		Groups: s.Groups, DstPortid: s.DstPortid, DstGroup: s.DstGroup}
	return nil
}

// unixSocket records a unix socket: its type, state, name, peer and queued messages.
// inFlightHint says what to do about connections a listener has not accepted yet.
const inFlightHint = "dump when the server has accepted them, or with --skip-in-flight to drop them (their clients see a reset)"

func (ft *fileTable) unixSocket(f *openFile, ino uint32, unsupported func(kind, hint string) error) error {
	skipInFlight := ft.skipInFlight
	s, err := ft.unixDiag(ino)
	if errors.Is(err, linux.ENOENT) {
		return unsupported(f.img.Path+" (neither unix, netlink, TCP nor UDP: packet, vsock...)", "")
	}
	if err != nil {
		return fmt.Errorf("look up socket %s: %w", f.img.Path, err)
	}
	f.img.Kind = imagepb.FileKind_FILE_KIND_UNIX_SOCKET
	if s.Name, err = absSocketName(f.pid, s.Name); err != nil {
		return unsupported(fmt.Sprintf("unix socket %s bound to a relative path", f.img.Path), err.Error())
	}
	u := &imagepb.UnixSocket{Ino: s.Ino, Type: int32(s.Type), State: int32(s.State), PeerIno: s.Peer, Name: s.Name, Shutdown: uint32(s.Shutdown)}
	if s.Name != "" && s.Name[0] == '/' {
		// sock_diag gives the device as the kernel's (major << 20 | minor).
		st, err := linux.Lstat(s.Name)
		u.NameRemoved = err != nil || st.Ino != uint64(s.VfsIno) || linux.KernelDev(st.Dev) != s.VfsDev
	}
	f.img.UnixSocket = u
	switch s.Type {
	case linux.SockStream, linux.SockDgram, linux.SockSeqpacket:
	default:
		return unsupported(fmt.Sprintf("unix socket of type %d", s.Type), "")
	}
	if s.State == linux.SockListen {
		if len(s.Icons) > 0 && !skipInFlight {
			return unsupported(fmt.Sprintf("listening unix socket %s with %d connections not accepted yet", s.Name, len(s.Icons)), inFlightHint)
		}
		u.Backlog = s.WQueue
		return nil
	}
	q, rights, err := linux.PeekQueue(f.dup)
	if errors.Is(err, linux.ErrQueuedFds) {
		return unsupported(fmt.Sprintf("unix stream socket %s with file descriptors in flight", f.img.Path),
			"the kernel does not show where in the byte stream they were sent; let the program receive them first")
	}
	if err != nil {
		return fmt.Errorf("peek socket %s: %w", f.img.Path, err)
	}
	if err := ft.inFlight(u, rights); err != nil {
		return fmt.Errorf("socket %s: fds in flight: %w", f.img.Path, err)
	}
	if s.Type == linux.SockStream && len(q) > 1 {
		var all []byte
		for _, m := range q {
			all = append(all, m...)
		}
		q = [][]byte{all}
	}
	u.Queue = q
	return nil
}

// absSocketName makes the name a socket was bound to absolute. The kernel keeps the path as
// given to bind; a relative one is taken from the process's working directory, and must lead
// to a socket there now (the directory may have changed since the bind).
func absSocketName(pid int, name string) (string, error) {
	if name == "" || name[0] == '/' || name[0] == '@' {
		return name, nil
	}
	cwd, err := procfs.Link(pid, "cwd")
	if err != nil {
		return "", err
	}
	abs := filepath.Join(cwd, name)
	if st, err := linux.Lstat(abs); err != nil || st.Mode&linux.SIFMT != linux.SIFSOCK {
		return "", fmt.Errorf("%s is not a socket in its working directory %s", name, cwd)
	}
	return abs, nil
}

// fixPtys marks the pty slaves whose master is dumped too: the pair is made again, and the
// slaves are opened on it; other slaves are terminals of someone else, reopened by path.
func (ft *fileTable) fixPtys() {
	masters := map[int32]bool{}
	for _, f := range ft.all {
		if f.img.Kind == imagepb.FileKind_FILE_KIND_PTY_MASTER {
			masters[f.img.PtyIndex] = true
		}
	}
	for _, f := range ft.all {
		if f.img.Kind == imagepb.FileKind_FILE_KIND_CHAR_DEVICE && strings.HasPrefix(f.img.Path, "/dev/pts/") && masters[f.img.PtyIndex] {
			f.img.Kind = imagepb.FileKind_FILE_KIND_PTY_SLAVE
		}
	}
}

// checkPeers refuses sockets connected to a socket outside the dump, or connected one way,
// and established TCP connections whose other end is not dumped too unless the user asked
// for them (--tcp-established): the peer outside must then put up with the checkpoint.
func (ft *fileTable) checkPeers() error {
	ends := map[[2]string]bool{}
	for _, f := range ft.all {
		if in := f.img.InetSocket; in != nil && in.Tcp != nil {
			ends[[2]string{in.Local, in.Peer}] = true
		}
	}
	for _, f := range ft.all {
		in := f.img.InetSocket
		if in == nil || in.Tcp == nil || ft.tcpEstablished || ends[[2]string{in.Peer, in.Local}] {
			continue
		}
		return &UnsupportedError{Pid: f.pid, What: "fd " + strconv.Itoa(f.fd),
			Kind: fmt.Sprintf("TCP connection %s -> %s with its other end outside the dumped trees", in.Local, in.Peer),
			Hint: "dump with --tcp-established to take it with TCP repair"}
	}
	byIno := map[uint32]*openFile{}
	for _, f := range ft.all {
		if u := f.img.UnixSocket; u != nil {
			byIno[u.Ino] = f
		}
	}
	for _, f := range ft.all {
		u := f.img.UnixSocket
		if u == nil || u.PeerIno == 0 || u.State == linux.SockListen {
			continue
		}
		what := "fd " + strconv.Itoa(f.fd)
		peer := byIno[u.PeerIno]
		if u.Type == linux.SockDgram && peer != nil && peer.img.UnixSocket.PeerIno == u.Ino && u.Name != "" && peer.img.UnixSocket.Name != "" {
			// Bound datagram sockets connected to each other: each is bound and connected to
			// the other's name again (a socketpair would have no names).
			u.ConnectTo = peer.img.UnixSocket.Name
			continue
		}
		if u.Type == linux.SockDgram && (peer == nil || peer.img.UnixSocket.PeerIno != u.Ino) {
			// Connected one way to a bound socket: connected to its name again at restore.
			if peer != nil {
				u.ConnectTo = peer.img.UnixSocket.Name
			} else if s, err := ft.unixDiag(u.PeerIno); err == nil {
				u.ConnectTo, _ = absSocketName(f.pid, s.Name)
			}
			if u.ConnectTo != "" {
				continue
			}
		}
		if peer == nil {
			return &UnsupportedError{Pid: f.pid, What: what, Kind: fmt.Sprintf("unix socket %s connected to a socket outside the dumped trees", f.img.Path),
				Hint: "dump the peer's tree too (-t PID,PID)"}
		}
		if peer.img.UnixSocket.PeerIno != u.Ino {
			return &UnsupportedError{Pid: f.pid, What: what, Kind: fmt.Sprintf("unix socket %s connected one way to %s", f.img.Path, peer.img.UnixSocket.Name)}
		}
	}
	return nil
}

// pipe records a pipe's capacity and copies its unread bytes with tee(2), which leaves them
// in place for the process.
func (ft *fileTable) pipe(pid, fd, dup int, ino uint64, flags uint32) (*pipeDump, error) {
	if pd := ft.pipes[ino]; pd != nil {
		return pd, nil
	}
	capacity, err := linux.PipeSize(dup)
	if err != nil {
		return nil, err
	}
	pd := &pipeDump{img: &imagepb.Pipe{Id: uint32(len(ft.pipes) + 1), Ino: ino, Capacity: uint32(capacity)}}
	ft.pipes[ino] = pd
	// tee needs a read end: this one, or a new reader opened through /proc.
	src := dup
	if flags&linux.OAccmode == linux.OWronly {
		src, err = linux.Open(procfs.Path(pid, "fd/"+strconv.Itoa(fd)), linux.ORdonly|linux.ONonblock|linux.OCloexec, 0)
		if err != nil {
			return nil, fmt.Errorf("open a reader of the pipe: %w", err)
		}
		defer linux.Close(src)
	}
	r, w, err := linux.Pipe2(linux.OCloexec | linux.ONonblock)
	if err != nil {
		return nil, err
	}
	defer linux.Close(r)
	defer linux.Close(w)
	if err := linux.SetPipeSize(w, capacity); err != nil {
		return nil, err
	}
	n, err := linux.Tee(src, w, capacity)
	if errors.Is(err, linux.EAGAIN) {
		return pd, nil // empty
	}
	if err != nil {
		return nil, err
	}
	pd.data = make([]byte, n)
	for got := 0; got < int(n); {
		m, err := linux.Read(r, pd.data[got:])
		if err != nil {
			return nil, fmt.Errorf("read pipe copy: %w", err)
		}
		got += m
	}
	pd.img.DataLen = uint64(n)
	return pd, nil
}

// writeData writes the open files, pipe contents and deleted files into the image.
func (ft *fileTable) writeData(w *image.Writer, tree *imagepb.Tree) error {
	for _, f := range ft.all {
		tree.Files = append(tree.Files, f.img)
		if !f.img.Deleted || (f.img.Kind != imagepb.FileKind_FILE_KIND_REGULAR && f.img.Kind != imagepb.FileKind_FILE_KIND_MEMFD) {
			continue // (a hung-up pty slave is deleted too, with nothing to save)
		}
		name := image.FileDataName(f.img.Id)
		df, err := w.CreateData(name, 0)
		if err != nil {
			return err
		}
		// Our dup may be write-only: read through a new description opened via /proc.
		src, err := linux.Open(procfs.Path(f.pid, "fd/"+strconv.Itoa(f.fd)), linux.ORdonly|linux.OCloexec, 0)
		if err != nil {
			return fmt.Errorf("read deleted file %s: %w", f.img.Path, err)
		}
		st, err := linux.Fstat(src)
		if err == nil {
			f.img.Ghost, err = saveGhost(src, st, df)
		}
		linux.Close(src)
		df.Close()
		if err != nil {
			return fmt.Errorf("read deleted file %s: %w", f.img.Path, err)
		}
		f.img.Size = uint64(st.Size)
		f.img.DataFile = name
	}
	for _, ino := range sortedPipes(ft.pipes) {
		pd := ft.pipes[ino]
		tree.Pipes = append(tree.Pipes, pd.img)
		if len(pd.data) == 0 {
			continue
		}
		name := image.PipeDataName(pd.img.Id)
		df, err := w.CreateData(name, 0)
		if err != nil {
			return err
		}
		if _, err := df.Write(pd.data); err != nil {
			return err
		}
		df.Close()
		pd.img.DataFile = name
	}
	return nil
}

func sortedPipes(m map[uint64]*pipeDump) []uint64 {
	out := make([]uint64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	for i := 1; i < len(out); i++ { // few pipes: insertion sort by id
		for j := i; j > 0 && m[out[j]].img.Id < m[out[j-1]].img.Id; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// inFlight records the files queued messages carry (gocr's peeked fds of them, kept open
// until the dump ends, as the other files' dups are).
func (ft *fileTable) inFlight(u *imagepb.UnixSocket, rights [][]int) error {
	any := false
	for _, fds := range rights {
		any = any || len(fds) > 0
	}
	if !any {
		return nil
	}
	ft.peeked = append(ft.peeked, slices.Concat(rights...)...)
	self, err := linux.PidfdOpenFlags(os.Getpid(), 0)
	if err != nil {
		return err
	}
	defer linux.Close(self)
	for _, fds := range rights {
		q := &imagepb.QueuedFds{}
		for _, fd := range fds {
			info, err := procfs.ReadFdInfo(os.Getpid(), fd)
			if err != nil {
				return err
			}
			of, _, err := ft.add(os.Getpid(), self, fd, info)
			if err != nil {
				return err
			}
			q.FileIds = append(q.FileIds, of.img.Id)
		}
		u.QueueFds = append(u.QueueFds, q)
	}
	return nil
}

// halfClosed says whether a TCP state is one of those gocr makes again by shutting one end
// of an established connection down (both ends in the dumped trees).
func halfClosed(state int) bool {
	return state == linux.TCPFinWait1 || state == linux.TCPFinWait2 || state == linux.TCPCloseWait
}

// repairedSocket is a connection in repair mode, and the SO_REUSEADDR it goes back to.
type repairedSocket struct{ fd, reuseAddr int }

// inetDiag is what sock_diag tells of the TCP or UDP socket with inode ino, read in the
// tree's network namespace.
func (ft *fileTable) inetDiag(family, protocol int, ino uint32) (linux.InetDiag, error) {
	key := [2]int{family, protocol}
	if ft.diags[key] == nil {
		read := func() error {
			m, err := linux.InetDiags(family, protocol)
			if ft.diags == nil {
				ft.diags = map[[2]int]map[uint32]linux.InetDiag{}
			}
			ft.diags[key] = m
			return err
		}
		var err error
		if ft.inNetns == nil {
			err = read()
		} else {
			err = ft.inNetns(read)
		}
		if err != nil {
			return linux.InetDiag{}, err
		}
	}
	return ft.diags[key][ino], nil
}

// unixDiag looks a unix socket up by inode, in the tree's network namespace.
func (ft *fileTable) unixDiag(ino uint32) (*linux.UnixSocket, error) {
	if ft.inNetns == nil {
		return linux.UnixDiag(ino)
	}
	var s *linux.UnixSocket
	err := ft.inNetns(func() error {
		var err error
		s, err = linux.UnixDiag(ino)
		return err
	})
	return s, err
}

// linkRemap makes a hard link to the file fd of pid refers to, whose name path was removed,
// in path's directory (the same file system), and returns it.
func linkRemap(pid, fd int, path string, st linux.Stat) (string, error) {
	remap := filepath.Join(filepath.Dir(path), fmt.Sprintf(".gocr-link-remap-%d-%d", st.Dev, st.Ino))
	if err := linux.LinkFd(procfs.Path(pid, "fd/"+strconv.Itoa(fd)), remap); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	return remap, nil
}
