package core

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/pluginhost"
)

// openFiles opens every open file description of the image in gocr, with its flags and
// offset, so that the processes take them over with pidfd_getfd: fds that shared a
// description share it again.
func (r *restorer) openFiles() error {
	pipes := map[uint32]*imagepb.Pipe{}
	for _, p := range r.c.Tree.Pipes {
		pipes[p.Id] = p
	}
	type ends struct {
		r, w         int
		usedR, usedW bool
	}
	made := map[uint32]*ends{}    // pipe id -> our ends
	pairs := map[uint32]int{}     // socket inode -> our end of a pair made for its peer
	var repaired []repairedSocket // TCP connections, in repair mode until both ends exist
	// Pty masters first: the slaves are opened on them.
	for _, f := range r.c.Tree.Files {
		if f.Kind != imagepb.FileKind_FILE_KIND_PTY_MASTER {
			continue
		}
		p := f.Pty
		fd, err := linux.OpenPtyMaster(&linux.PtyState{Index: int(f.PtyIndex), Termios: p.Termios, Rows: uint16(p.Rows), Cols: uint16(p.Cols), Locked: p.Locked, Packet: p.PacketMode}, int(f.Flags))
		if err == nil {
			err = setFl(fd, int(f.Flags)&^linux.OCloexec)
		}
		if err == nil && p.HasOwner {
			err = linux.SetPtsOwner(int(f.PtyIndex), &linux.PtsOwner{Uid: p.Uid, Gid: p.Gid, Mode: p.Mode})
		}
		if err != nil {
			return fmt.Errorf("pty %d: %w", f.PtyIndex, err)
		}
		r.files[f.Id] = fd
	}
	for _, f := range r.c.Tree.Files {
		if f.Kind == imagepb.FileKind_FILE_KIND_PTY_MASTER || f.Kind == imagepb.FileKind_FILE_KIND_PLUGIN {
			continue
		}
		if _, _, ok := r.c.TreeProcPath(f.Path); ok && !f.Deleted {
			continue // a /proc file of a process of the tree: opened once it exists (openProcFiles)
		}
		acc := int(f.Flags) & linux.OAccmode
		flags := int(f.Flags) &^ (linux.OCreat | linux.OExcl | linux.OTrunc | linux.OCloexec)
		var fd int
		var err error
		switch f.Kind {
		case imagepb.FileKind_FILE_KIND_TIMERFD:
			tf := f.Timerfd
			fd, err = linux.Timerfd(int(tf.Clockid), flags, tf.ValueNs, tf.IntervalNs, tf.Ticks)
		case imagepb.FileKind_FILE_KIND_SIGNALFD:
			fd, err = linux.Signalfd(f.SignalfdMask, flags)
		case imagepb.FileKind_FILE_KIND_INOTIFY:
			fd, err = openInotify(f, flags)
			if err == nil {
				err = setFl(fd, flags)
			}
		case imagepb.FileKind_FILE_KIND_OPATH:
			fd, err = openPath(f.Path, f.Mode, flags)
		case imagepb.FileKind_FILE_KIND_MEMFD, imagepb.FileKind_FILE_KIND_REGULAR:
			if sfd, ok := r.savedByInode(f.Dev, f.Ino); ok && f.Deleted {
				// Also mapped: another description of the file the mappings get.
				fd, err = linux.Open("/proc/self/fd/"+strconv.Itoa(sfd), flags|linux.OCloexec, 0)
				if err == nil {
					_, err = linux.Seek(fd, f.Pos, 0)
				}
				break
			}
			if f.Kind == imagepb.FileKind_FILE_KIND_REGULAR {
				if f.Deleted {
					fd, err = r.recreateDeleted(f, flags)
				} else {
					fd, err = linux.Open(f.Path, flags|linux.OCloexec, 0)
				}
				if err == nil && f.Pos != 0 {
					_, err = linux.Seek(fd, f.Pos, 0)
				}
				break
			}
			var data []byte
			if f.DataFile != "" {
				data, err = os.ReadFile(r.c.Path(f.DataFile))
			}
			if err == nil {
				fd, err = linux.Memfd(f.MemfdName, int(f.MemfdSeals), func(fd int) error { return writeGhost(fd, data, f.Size, f.Mode, f.Ghost) })
			}
			if err == nil {
				_, err = linux.Seek(fd, f.Pos, 0)
			}
		case imagepb.FileKind_FILE_KIND_DIRECTORY:
			fd, err = linux.Open(f.Path, flags|linux.OCloexec, 0)
			if err == nil && f.Pos != 0 {
				_, err = linux.Seek(fd, f.Pos, 0)
			}
		case imagepb.FileKind_FILE_KIND_PTY_SLAVE:
			fd, err = linux.Open(linux.PtsPath(int(f.PtyIndex)), flags|linux.OCloexec|linux.ONoctty, 0)
		case imagepb.FileKind_FILE_KIND_CHAR_DEVICE:
			if f.Deleted {
				fd, err = linux.HungUpPtySlave(flags)
				break
			}
			path := f.Path
			if r.c.Tree.ShellJob && f.Rdev == r.c.Tree.CttyRdev {
				path = r.opts.TTY // the terminal of the restore takes the old one's place
			}
			if f.Rdev == devTTY && !r.c.Tree.ShellJob {
				continue // its process's controlling terminal, not gocr's: opened there (openOwnTTY)
			}
			fd, err = linux.Open(path, flags|linux.OCloexec|linux.ONoctty, 0)
		case imagepb.FileKind_FILE_KIND_EVENTFD:
			fd, err = linux.Eventfd(f.EventfdCount, f.EventfdSemaphore, linux.OCloexec)
			if err == nil {
				err = setFl(fd, flags)
			}
		case imagepb.FileKind_FILE_KIND_EPOLL:
			// Filled from inside the process that holds it, once its fds are in place.
			fd, err = linux.EpollCreate()
		case imagepb.FileKind_FILE_KIND_PIDFD:
			continue // once the processes exist (openPidfds)
		case imagepb.FileKind_FILE_KIND_NETLINK_SOCKET:
			n := f.NetlinkSocket
			fd, err = linux.MakeNetlink(&linux.NetlinkSocket{Type: int(n.Type), Protocol: int(n.Protocol), Portid: n.Portid,
				Groups: n.Groups, DstPortid: n.DstPortid, DstGroup: n.DstGroup})
			if err == nil {
				err = setFl(fd, flags)
			}
		case imagepb.FileKind_FILE_KIND_INET_SOCKET:
			fd, err = openInetSocket(f.InetSocket)
			if err == nil {
				err = setFl(fd, flags)
			}
			if err == nil && f.InetSocket.Tcp != nil {
				repaired = append(repaired, repairedSocket{fd, int(f.InetSocket.Options["SO_REUSEADDR"])})
			}
		case imagepb.FileKind_FILE_KIND_UNIX_SOCKET:
			fd, err = r.openUnixSocket(f.UnixSocket, pairs)
			if err == nil {
				err = setFl(fd, flags)
			}
		case imagepb.FileKind_FILE_KIND_PIPE, imagepb.FileKind_FILE_KIND_FIFO:
			if in, ok := r.opts.InheritFds[fmt.Sprintf("pipe:[%d]", pipes[f.PipeId].GetIno())]; ok && f.Kind == imagepb.FileKind_FILE_KIND_PIPE {
				fd, err = inheritPipe(in, acc)
				if err == nil {
					err = setFl(fd, flags)
				}
				break
			}
			e := made[f.PipeId]
			if e == nil {
				e = &ends{r: -1, w: -1}
				made[f.PipeId] = e
				if err := r.makePipe(f, pipes[f.PipeId], &e.r, &e.w); err != nil {
					return err
				}
			}
			// The first description of each end takes it; more are opened anew through /proc.
			end, used := e.r, &e.usedR
			if acc == linux.OWronly {
				end, used = e.w, &e.usedW
			}
			switch {
			case acc == linux.ORdwr && f.Kind == imagepb.FileKind_FILE_KIND_FIFO:
				fd, err = linux.Open(f.Path, linux.ORdwr|linux.ONonblock|linux.OCloexec, 0)
			case !*used:
				fd, *used = end, true
			default:
				fd, err = linux.Open("/proc/self/fd/"+strconv.Itoa(end), acc|linux.ONonblock|linux.OCloexec, 0)
			}
			if err == nil {
				err = setFl(fd, flags)
			}
		default:
			return fmt.Errorf("file %d: unknown kind %v", f.Id, f.Kind)
		}
		if err != nil {
			return fmt.Errorf("open file %d (%s): %w", f.Id, f.Path, err)
		}
		r.files[f.Id] = fd
	}
	if err := r.checkPluginFiles(); err != nil {
		return err
	}
	if err := r.refillSockets(); err != nil {
		return err
	}
	if err := r.takeFileLocks(); err != nil {
		return err
	}
	for _, c := range repaired {
		if err := linux.TCPRepairOff(c.fd); err != nil {
			return fmt.Errorf("TCP connection: %w", err)
		}
		if err := linux.AfterRepair(c.fd, c.reuseAddr); err != nil {
			return fmt.Errorf("TCP connection: %w", err)
		}
	}
	for _, e := range made {
		if !e.usedR {
			r.extra = append(r.extra, e.r)
		}
		if !e.usedW {
			r.extra = append(r.extra, e.w)
		}
	}
	return nil
}

// takeFileLocks takes the flock and OFD locks again. They belong to the open file
// description, not to a process, so gocr takes them on its own fd of it: the restored
// processes hold them once they hold the file. A lock another process took since the dump
// stops the restore here, before any process is made.
func (r *restorer) takeFileLocks() error {
	for _, f := range r.c.Tree.Files {
		for _, l := range f.Locks {
			fd, ok := r.files[f.Id]
			if !ok {
				return fmt.Errorf("file %d (%s): lock on a file that was not opened", f.Id, f.Path)
			}
			var err error
			if l.Kind == imagepb.LockKind_LOCK_KIND_FLOCK {
				err = linux.Flock(fd, l.Write)
			} else {
				err = linux.SetOFDLock(fd, l.Write, l.Start, l.End)
			}
			if err != nil {
				return lockError(f, l, fd, err)
			}
		}
	}
	return nil
}

// lockError says which lock of f could not be taken again, and who holds it if the kernel
// tells (it does for byte-range locks).
func lockError(f *imagepb.OpenFile, l *imagepb.FileLock, fd int, err error) error {
	what := fmt.Sprintf("%s %s lock on %s", lockMode(l.Write), lockKindName(l.Kind), f.Path)
	if l.Kind != imagepb.LockKind_LOCK_KIND_FLOCK {
		what += fmt.Sprintf(" (bytes %d-%s)", l.Start, lockEnd(l.End))
	}
	if !errors.Is(err, linux.EAGAIN) && !errors.Is(err, linux.EACCES) {
		return fmt.Errorf("take the %s again: %w", what, err)
	}
	holder := "another process holds it (see /proc/locks)"
	if l.Kind != imagepb.LockKind_LOCK_KIND_FLOCK {
		if pid, herr := linux.LockHolder(fd, l.Write, l.Start, l.End); herr == nil && pid > 0 {
			holder = fmt.Sprintf("process %d holds it", pid)
		} else if herr == nil && pid == -1 {
			holder = "another open file description holds it (an OFD lock; see /proc/locks)"
		}
	}
	return fmt.Errorf("take the %s again: %s: %w", what, holder, ErrLockHeld)
}

func lockMode(write bool) string {
	if write {
		return "write"
	}
	return "read"
}

func lockKindName(k imagepb.LockKind) string {
	switch k {
	case imagepb.LockKind_LOCK_KIND_FLOCK:
		return "flock"
	case imagepb.LockKind_LOCK_KIND_OFD:
		return "OFD"
	}
	return "POSIX"
}

func lockEnd(end int64) string {
	if end < 0 {
		return "EOF"
	}
	return fmt.Sprint(end)
}

// openPidfds makes the pidfds, once every process and thread they may refer to exists.
func (r *restorer) openPidfds() error {
	for _, f := range r.c.Tree.Files {
		if f.Kind != imagepb.FileKind_FILE_KIND_PIDFD {
			continue
		}
		fd, err := linux.PidfdOpenFlags(r.hostPid(int(f.PidfdPid)), int(f.Flags))
		if err != nil {
			return fmt.Errorf("restore: pidfd of %d: %w", f.PidfdPid, err)
		}
		r.files[f.Id] = fd
	}
	return nil
}

func setFl(fd int, flags int) error {
	// O_ASYNC is set by the process itself (see armAsync).
	return linux.SetFl(fd, flags&^linux.OAsync)
}

// asyncHolders chooses, for each file with O_ASYNC, the process and fd number that set it
// again: the kernel sends that fd number in si_fd. The owner, where it holds the file, or
// else the first holder.
func (r *restorer) asyncHolders() map[uint32][2]int32 {
	out := map[uint32][2]int32{}
	for _, pe := range r.c.Tree.Processes {
		p := r.c.Procs[pe.Pid]
		if p == nil {
			continue
		}
		for _, fd := range p.Fds {
			f := r.fileByID(fd.FileId)
			if f == nil || f.Flags&linux.OAsync == 0 {
				continue
			}
			_, seen := out[f.Id]
			if !seen || (f.Owner != nil && f.Owner.Pid == pe.Pid && out[f.Id][0] != pe.Pid) {
				out[f.Id] = [2]int32{pe.Pid, fd.Fd}
			}
		}
	}
	return out
}

// armAsync sets O_ASYNC on the fds of p chosen by asyncHolders, from inside p.
func (r *restorer) armAsync(p *procRestore) error {
	for _, fd := range p.img.Fds {
		if at, ok := r.async[fd.FileId]; ok && at == [2]int32{p.entry.Pid, fd.Fd} {
			f := r.fileByID(fd.FileId)
			if _, err := r.call(p, fmt.Sprintf("set O_ASYNC on fd %d", fd.Fd), linux.SysFcntl, uint64(fd.Fd), linux.FSetfl, uint64(f.Flags&^linux.OCloexec)); err != nil {
				return err
			}
		}
	}
	return nil
}

// inheritPipe takes the caller's fd in for a pipe end opened with acc: a dup, refused unless
// it is a pipe open the same way.
func inheritPipe(in, acc int) (int, error) {
	st, err := linux.Fstat(in)
	if err != nil {
		return -1, fmt.Errorf("--inherit-fd fd[%d]: %w", in, err)
	}
	fl, err := linux.GetFl(in)
	if err != nil {
		return -1, fmt.Errorf("--inherit-fd fd[%d]: %w", in, err)
	}
	if st.Mode&linux.SIFMT != linux.SIFIFO || fl&linux.OAccmode != acc {
		return -1, fmt.Errorf("--inherit-fd fd[%d]: not a pipe open for %s: %w", in, map[int]string{linux.ORdonly: "reading", linux.OWronly: "writing"}[acc], ErrBadArgs)
	}
	return linux.DupCloexec(in)
}

// makePipe creates the pipe (or opens the FIFO) behind f with its capacity and unread bytes.
// The FIFO is opened read-write first so that neither end blocks.
func (r *restorer) makePipe(f *imagepb.OpenFile, p *imagepb.Pipe, rd, wr *int) error {
	var err error
	if f.Kind == imagepb.FileKind_FILE_KIND_FIFO {
		holder, err := linux.Open(f.Path, linux.ORdwr|linux.ONonblock|linux.OCloexec, 0)
		if err != nil {
			return fmt.Errorf("open FIFO %s: %w", f.Path, err)
		}
		r.extra = append(r.extra, holder)
		if *rd, err = linux.Open(f.Path, linux.ORdonly|linux.ONonblock|linux.OCloexec, 0); err != nil {
			return err
		}
		if *wr, err = linux.Open(f.Path, linux.OWronly|linux.ONonblock|linux.OCloexec, 0); err != nil {
			return err
		}
	} else if *rd, *wr, err = linux.Pipe2(linux.OCloexec | linux.ONonblock); err != nil {
		return err
	}
	if p.Capacity != 0 {
		if err := linux.SetPipeSize(*wr, int(p.Capacity)); err != nil {
			return fmt.Errorf("pipe %d: %w", p.Id, err)
		}
	}
	if p.DataLen > 0 {
		b, err := os.ReadFile(r.c.Path(p.DataFile))
		if err != nil {
			return err
		}
		if err := linux.Write(*wr, b); err != nil {
			return fmt.Errorf("pipe %d: refill: %w", p.Id, err)
		}
	}
	return nil
}

// openSavedFiles recreates the mapped files that had no path (deleted files, memfds) from
// their saved content.
func (r *restorer) openSavedFiles() error {
	r.saved = map[uint32]int{}
	for _, sf := range r.c.Tree.SavedFiles {
		var fd int
		var err error
		if sf.Memfd {
			var data []byte
			if sf.DataFile != "" {
				if data, err = os.ReadFile(r.c.Path(sf.DataFile)); err != nil {
					return err
				}
			}
			fd, err = linux.Memfd(sf.MemfdName, int(sf.Seals), func(fd int) error { return writeGhost(fd, data, sf.Size, sf.Mode, sf.Ghost) })
		} else {
			// Read-only unless a mapping writes to it: a binary with a writer open cannot
			// become a process's exe (ETXTBSY).
			fd, err = r.recreateDeleted(&imagepb.OpenFile{Id: 1000000 + sf.Id, Path: sf.Path, Mode: sf.Mode, Size: sf.Size, DataFile: sf.DataFile, Ghost: sf.Ghost}, r.savedFlags(sf.Id))
		}
		if err != nil {
			return fmt.Errorf("recreate mapped file %s: %w", sf.Path, err)
		}
		r.saved[sf.Id] = fd
	}
	return nil
}

// savedFlags is O_RDWR when some process maps saved file id shared and writable.
func (r *restorer) savedFlags(id uint32) int {
	for _, p := range r.c.Procs {
		for _, v := range p.Vmas {
			if v.SavedFileId == id && v.Kind == imagepb.VMAKind_VMA_KIND_FILE_SHARED && v.FileFlags == linux.ORdwr {
				return linux.ORdwr
			}
		}
	}
	return linux.ORdonly
}

// savedByInode returns our fd of the saved file that had this device and inode.
func (r *restorer) savedByInode(dev, ino uint64) (int, bool) {
	for _, sf := range r.c.Tree.SavedFiles {
		if sf.Dev == dev && sf.Ino == ino {
			return r.saved[sf.Id], true
		}
	}
	return -1, false
}

// recreateDeleted makes a new unlinked file with the saved content of a deleted one, at its
// old path when that is free (so /proc shows the same name), else next to it.
func (r *restorer) recreateDeleted(f *imagepb.OpenFile, flags int) (int, error) {
	path := f.Path
	// Its directory may have been removed too: made for the time of the creation.
	made, err := makeMissingDirs(filepath.Dir(path))
	if err != nil {
		return -1, fmt.Errorf("make the directories of %s: %w", path, err)
	}
	defer removeDirs(made)
	tmp, err := linux.Open(path, linux.ORdwr|linux.OCreat|linux.OExcl|linux.OCloexec, f.Mode&0o7777)
	if err != nil {
		path = filepath.Join(filepath.Dir(f.Path), fmt.Sprintf(".gocr-deleted-%d-%d", os.Getpid(), f.Id))
		if tmp, err = linux.Open(path, linux.ORdwr|linux.OCreat|linux.OExcl|linux.OCloexec, f.Mode&0o7777); err != nil {
			return -1, err
		}
	}
	defer linux.Unlink(path)
	defer linux.Close(tmp)
	var b []byte
	if f.DataFile != "" {
		if b, err = os.ReadFile(r.c.Path(f.DataFile)); err != nil {
			return -1, err
		}
	}
	if err := writeGhost(tmp, b, f.Size, f.Mode, f.Ghost); err != nil {
		return -1, err
	}
	return linux.Open(path, flags|linux.OCloexec, 0)
}

// openUnixSocket makes a unix socket like the dumped one: connected pairs as socketpairs (the
// second end is kept in pairs for the peer), listeners bound and listening, unconnected
// sockets bound to their name.
func (r *restorer) openUnixSocket(u *imagepb.UnixSocket, pairs map[uint32]int) (int, error) {
	switch {
	case u.ConnectTo != "":
		// Made unconnected, bound to its own name if it had one; connected once its queue is
		// refilled (refillSockets).
		return bindUnix(u, -1)
	case u.State == linux.SockListen:
		return bindUnix(u, int(u.Backlog))
	case u.PeerIno != 0:
		if fd, ok := pairs[u.Ino]; ok {
			delete(pairs, u.Ino)
			return fd, nil
		}
		a, b, err := linux.Socketpair(int(u.Type))
		if err != nil {
			return -1, err
		}
		pairs[u.PeerIno] = b
		return a, nil
	case u.State == linux.SockEstablished && (u.Type != linux.SockDgram || u.Name == ""):
		// Connected, but its peer is gone (closed): one end of a new pair, whose other end
		// refills the queue and is then closed, so that the process reads what was left and
		// then end-of-file, as it would have. (A bound datagram socket shows as connected
		// once another has connected to it: that one is made bound, below.)
		a, b, err := linux.Socketpair(int(u.Type))
		if err != nil {
			return -1, err
		}
		if r.orphans == nil {
			r.orphans = map[uint32]int{}
		}
		r.orphans[u.Ino] = b
		return a, nil
	default:
		return bindUnix(u, -1)
	}
}

// bindUnix makes a unix socket bound to u's name (listening with backlog >= 0). When the
// socket's file had been removed, it is bound there all the same (the directories missing
// are made, and what is at the path now is moved aside, for the moment) and its file removed
// again.
func bindUnix(u *imagepb.UnixSocket, backlog int) (int, error) {
	if !u.NameRemoved {
		if err := removeStaleSocket(u.Name); err != nil {
			return -1, err
		}
		return linux.UnixListen(int(u.Type), u.Name, backlog)
	}
	made, err := makeMissingDirs(filepath.Dir(u.Name))
	if err != nil {
		return -1, fmt.Errorf("bind %s: make its directories: %w", u.Name, err)
	}
	defer removeDirs(made)
	if st, err := linux.Lstat(u.Name); err == nil {
		// Only what a program makes where its socket was (a FIFO, another socket) is moved.
		if t := st.Mode & linux.SIFMT; t != linux.SIFIFO && t != linux.SIFSOCK {
			return -1, fmt.Errorf("bind %s: a file that is not a FIFO or a socket is in the way", u.Name)
		}
		aside := filepath.Join(filepath.Dir(u.Name), fmt.Sprintf(".gocr-aside-%d-%d", os.Getpid(), u.Ino))
		if err := os.Rename(u.Name, aside); err != nil {
			return -1, fmt.Errorf("bind %s: move what is there aside: %w", u.Name, err)
		}
		defer os.Rename(aside, u.Name)
	}
	fd, err := linux.UnixListen(int(u.Type), u.Name, backlog)
	if err != nil {
		return -1, err
	}
	if err := linux.Unlink(u.Name); err != nil {
		linux.Close(fd)
		return -1, fmt.Errorf("remove %s again: %w", u.Name, err)
	}
	return fd, nil
}

// removeStaleSocket removes the socket file a dumped process left at a path it was bound to,
// so that the restored socket can bind it again. Anything else at the path stays.
func removeStaleSocket(name string) error {
	if name == "" || name[0] == '@' {
		return nil
	}
	st, err := linux.Lstat(name)
	if err != nil {
		return nil
	}
	if st.Mode&linux.SIFMT != linux.SIFSOCK {
		return fmt.Errorf("bind %s: a file that is not a socket is in the way", name)
	}
	return linux.Unlink(name)
}

// refillSockets sends every queued message again from the peer, so that each end finds its
// receive queue as it was, and shuts down what was shut down.
func (r *restorer) refillSockets() error {
	byIno := map[uint32]*imagepb.OpenFile{}
	for _, f := range r.c.Tree.Files {
		if f.UnixSocket != nil {
			byIno[f.UnixSocket.Ino] = f
		}
	}
	temp := -1 // an unbound datagram socket that sends to bound ones by name
	defer func() {
		if temp >= 0 {
			linux.Close(temp)
		}
	}()
	for _, f := range r.c.Tree.Files {
		u := f.UnixSocket
		if u == nil || len(u.Queue) == 0 {
			continue
		}
		from, to := -1, "" // the peer that sends them again, and the name it sends to
		if peer := byIno[u.PeerIno]; peer != nil && peer.UnixSocket.PeerIno == u.Ino {
			from = r.files[peer.Id]
		} else if end, ok := r.orphans[u.Ino]; ok {
			from = end
		} else if u.Type == linux.SockDgram && u.Name != "" {
			if temp < 0 {
				var err error
				if temp, err = linux.UnixListen(linux.SockDgram, "", -1); err != nil {
					return err
				}
			}
			from, to = temp, u.Name
		} else {
			return fmt.Errorf("socket %d: %d queued messages but no peer to send them from", u.Ino, len(u.Queue))
		}
		for i, m := range u.Queue {
			var fds []int // the files in flight with it
			if i < len(u.QueueFds) {
				for _, id := range u.QueueFds[i].FileIds {
					fds = append(fds, r.files[id])
				}
			}
			var err error
			switch {
			case len(fds) > 0:
				err = linux.SendRights(from, to, m, fds)
			case to != "":
				err = linux.SendTo(from, to, m)
			default:
				err = linux.Send(from, m)
			}
			if err != nil {
				return fmt.Errorf("socket %d: refill its queue: %w", u.Ino, err)
			}
		}
	}
	// The queues are full again: now the peers gone at the dump go, and the sockets
	// connected one way connect (a connected datagram socket takes messages from its peer
	// only, so not before).
	for _, end := range r.orphans {
		linux.Close(end)
	}
	r.orphans = nil
	for _, f := range r.c.Tree.Files {
		if u := f.UnixSocket; u != nil && u.ConnectTo != "" {
			if err := linux.UnixConnect(r.files[f.Id], u.ConnectTo); err != nil {
				return fmt.Errorf("socket %d: connect it again to %s: %w", u.Ino, u.ConnectTo, err)
			}
		}
	}
	for _, f := range r.c.Tree.Files {
		u := f.UnixSocket
		if u == nil || u.Shutdown == 0 {
			continue
		}
		how := map[uint32]int{1: 0, 2: 1, 3: 2}[u.Shutdown&3]
		if err := linux.Shutdown(r.files[f.Id], how); err != nil {
			return fmt.Errorf("socket %d: %w", u.Ino, err)
		}
	}
	return nil
}

// openInetSocket makes a TCP or UDP socket like the dumped one.
func openInetSocket(in *imagepb.InetSocket) (int, error) {
	s, err := inetFromImage(in)
	if err != nil {
		return -1, err
	}
	if c := in.Tcp; c != nil {
		conn := &linux.TCPConn{SendSeq: c.SendSeq, RecvSeq: c.RecvSeq, SendQueue: c.SendQueue, RecvQueue: c.RecvQueue,
			MSS: c.Mss, SndWscale: uint8(c.SndWscale), RcvWscale: uint8(c.RcvWscale), Timestamps: c.Timestamps, Sack: c.Sack,
			TSVal: c.Tsval, Window: linux.TCPRepairWindow{SndWl1: c.SndWl1, SndWnd: c.SndWnd, MaxWindow: c.MaxWindow, RcvWnd: c.RcvWnd, RcvWup: c.RcvWup}}
		return linux.RestoreTCP(s, conn)
	}
	return linux.MakeInet(s)
}

// openInotify makes an inotify instance with the same watches under the same descriptors:
// they are added in order, and a descriptor number that was freed before the dump is used up
// by a watch added and removed again.
func openInotify(f *imagepb.OpenFile, flags int) (int, error) {
	fd, err := linux.InotifyInit(flags)
	if err != nil {
		return -1, err
	}
	ws := append([]*imagepb.InotifyWatch(nil), f.InotifyWatches...)
	sort.Slice(ws, func(i, j int) bool { return ws[i].Wd < ws[j].Wd })
	for _, w := range ws {
		for {
			wd, err := linux.InotifyAddWatch(fd, w.Path, w.Mask)
			if err != nil {
				linux.Close(fd)
				return -1, err
			}
			if wd == int(w.Wd) {
				break
			}
			if wd > int(w.Wd) {
				linux.Close(fd)
				return -1, fmt.Errorf("inotify watch %d on %s came back as %d", w.Wd, w.Path, wd)
			}
			linux.InotifyRmWatch(fd, wd) // a descriptor freed before the dump
		}
	}
	// Removing those watches queued IN_IGNORED events the process must not see.
	if err := linux.SetFl(fd, linux.ONonblock); err != nil {
		linux.Close(fd)
		return -1, err
	}
	buf := make([]byte, 4096)
	for {
		if n, err := linux.Read(fd, buf); n <= 0 || err != nil {
			break
		}
	}
	return fd, nil
}

// makeSysvShm makes each System V segment again with its id, key, owner and content.
func (r *restorer) makeSysvShm() error {
	for _, s := range r.c.Tree.SysvShm {
		sh := r.shmemByID(s.ShmemId)
		if sh == nil {
			return fmt.Errorf("System V shm %d: no content in the image", s.Id)
		}
		var data []byte
		if sh.PagesFile != "" {
			var err error
			if data, err = os.ReadFile(r.c.Path(sh.PagesFile)); err != nil {
				return err
			}
		}
		err := linux.ShmCreate(int(s.Id), &linux.ShmInfo{Key: s.Key, Size: s.Size, Mode: s.Mode, Uid: s.Uid, Gid: s.Gid}, func(mem []byte) error {
			off := uint64(0)
			for _, run := range sh.Runs {
				n := run.NrPages * linux.PageSize
				if run.Vaddr >= uint64(len(mem)) || off+n > uint64(len(data)) {
					return fmt.Errorf("System V shm %d: content beyond its size", s.Id)
				}
				copy(mem[run.Vaddr:], data[off:off+n]) // the last page may be partly outside
				off += n
			}
			return nil
		})
		if err != nil {
			return err
		}
		r.sysv = append(r.sysv, int(s.Id))
	}
	return nil
}

// removeSysvShm removes the segments made: all of them after a failure, else those the
// processes had removed already (they go when the last one detaches).
func (r *restorer) removeSysvShm(all bool) {
	for _, s := range r.c.Tree.SysvShm {
		if all || s.Removed {
			for _, id := range r.sysv {
				if id == int(s.Id) {
					linux.ShmRemove(id)
				}
			}
		}
	}
}

// checkPluginFiles makes sure, before any process exists, that each plugin file of the
// image goes to the plugin that dumped it.
func (r *restorer) checkPluginFiles() error {
	for _, f := range r.c.Tree.Files {
		if f.Kind != imagepb.FileKind_FILE_KIND_PLUGIN {
			continue
		}
		if r.host == nil {
			return fmt.Errorf("the image has plugin files but names no plugin")
		}
		p, err := r.host.Claim(f.Path, uint32((f.Rdev>>8)&0xfff), f.Mode&linux.SIFMT == linux.SIFCHR)
		if err != nil {
			return err
		}
		if p == nil || p.Name != f.Plugin {
			return fmt.Errorf("file %s of pid %d: plugin %s does not claim it here", f.Path, f.PluginPid, f.Plugin)
		}
	}
	return nil
}

// restorePluginFiles asks the plugins to make a process's files again, once the process
// exists with its memory in place (a driver may bind state to the process that makes the
// call: KFD's RESTORE), and before its fds are installed. For one process the calls come one
// at a time in fd order; processes go at the same time, so that a plugin may make one
// process's call wait for another's (the ordering contract, docs/plugins.md).
func (r *restorer) restorePluginFiles(pid int32) error {
	var files []*imagepb.OpenFile
	for _, f := range r.c.Tree.Files {
		if f.Kind == imagepb.FileKind_FILE_KIND_PLUGIN && f.PluginPid == pid {
			files = append(files, f)
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].PluginFd < files[j].PluginFd })
	for _, f := range files {
		p, err := r.host.Claim(f.Path, uint32((f.Rdev>>8)&0xfff), f.Mode&linux.SIFMT == linux.SIFCHR)
		if err != nil {
			return err
		}
		fd, err := r.host.RestoreFile(r.ctx, p, pluginhost.File{Pid: int(f.PluginPid), Fd: int(f.PluginFd),
			Path: f.Path, Flags: f.Flags, Pos: f.Pos, Rdev: f.Rdev}, f.PluginBlob)
		if err != nil {
			return err
		}
		// r.files is the tracer thread's: the other processes' steps read it there.
		r.thread.Do(func() error { r.files[f.Id] = fd; return nil })
	}
	return nil
}

// setFileOwners gives the files their O_ASYNC owners and signals, once every process and
// thread exists (the owner may be any of them).
func (r *restorer) setFileOwners() error {
	for _, f := range r.c.Tree.Files {
		o, fd, ok := f.Owner, 0, false
		if o != nil {
			fd, ok = r.files[f.Id]
		}
		if !ok {
			continue
		}
		owner := linux.FileOwner{Type: int(o.Type), Signal: int(o.Signal)}
		if o.Pid != 0 {
			if owner.Pid = r.hostPid(int(o.Pid)); owner.Pid == 0 {
				return fmt.Errorf("restore: file %s: its owner %d was not made", f.Path, o.Pid)
			}
		}
		if err := linux.SetOwner(fd, owner); err != nil {
			return fmt.Errorf("restore: file %s: %w", f.Path, err)
		}
	}
	return nil
}

// openPath opens an O_PATH fd again, checking that the path leads to the same kind of file.
func openPath(path string, mode uint32, flags int) (int, error) {
	fd, err := linux.Open(path, flags|linux.OCloexec, 0)
	if err != nil {
		return -1, err
	}
	st, err := linux.Fstat(fd)
	if err == nil && st.Mode&linux.SIFMT != mode&linux.SIFMT {
		err = fmt.Errorf("%s is another kind of file now (mode %#o, was %#o)", path, st.Mode&linux.SIFMT, mode&linux.SIFMT)
	}
	if err != nil {
		linux.Close(fd)
		return -1, err
	}
	return fd, nil
}

// openProcFiles opens the files of /proc/PID/ of the tree's processes, now that they exist:
// under their pids as gocr sees them.
func (r *restorer) openProcFiles() error {
	for _, f := range r.c.Tree.Files {
		pid, rest, ok := r.c.TreeProcPath(f.Path)
		if !ok || f.Deleted {
			continue
		}
		host := r.hostPid(int(pid))
		if host == 0 {
			return fmt.Errorf("restore: open file %s: process %d was not made", f.Path, pid)
		}
		path := fmt.Sprintf("/proc/%d%s", host, rest)
		flags := int(f.Flags) &^ (linux.OCreat | linux.OExcl | linux.OTrunc | linux.OCloexec)
		var fd int
		var err error
		if f.Kind == imagepb.FileKind_FILE_KIND_OPATH {
			fd, err = openPath(path, f.Mode, flags)
		} else {
			fd, err = linux.Open(path, flags|linux.OCloexec, 0)
			if err == nil {
				err = setFl(fd, flags)
			}
			if err == nil && f.Pos != 0 {
				_, err = linux.Seek(fd, f.Pos, 0)
			}
		}
		if err != nil {
			return fmt.Errorf("restore: open file %d (%s): %w", f.Id, f.Path, err)
		}
		r.files[f.Id] = fd
	}
	return nil
}

// makeMissingDirs makes dir and the directories missing above it (mode 0700), and returns
// those it made, deepest first.
func makeMissingDirs(dir string) ([]string, error) {
	var missing []string // deepest first
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		}
		missing = append(missing, d)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o700); err != nil {
			removeDirs(missing[i+1:])
			return nil, err
		}
	}
	return missing, nil
}

// removeDirs removes directories, deepest first.
func removeDirs(dirs []string) error {
	for _, d := range dirs {
		if err := os.Remove(d); err != nil {
			return err
		}
	}
	return nil
}

// devTTY is /dev/tty's device number (5, 0): an open of it is of the opener's controlling
// terminal.
const devTTY = 5 << 8

// openOwnTTY opens /dev/tty files inside the first process that holds one, once its session
// has its controlling terminal again, and takes the description for the others.
func (r *restorer) openOwnTTY(p *procRestore) error {
	for _, fd := range p.img.Fds {
		f := r.fileByID(fd.FileId)
		if f == nil || f.Kind != imagepb.FileKind_FILE_KIND_CHAR_DEVICE || f.Rdev != devTTY {
			continue
		}
		if _, ok := r.files[f.Id]; ok {
			continue
		}
		a, err := p.arg(scratchArg, cstring("/dev/tty"))
		if err != nil {
			return err
		}
		flags := uint64(f.Flags) &^ (linux.OCreat | linux.OExcl | linux.OTrunc | linux.OCloexec)
		got, err := r.call(p, "open /dev/tty", linux.SysOpenat, atFdcwd, a, flags|linux.ONoctty|linux.OCloexec)
		if err != nil {
			return err
		}
		ours, err := linux.PidfdGetfdOf(p.host, int(got))
		r.call(p, "close", linux.SysClose, got)
		if err != nil {
			return fmt.Errorf("take /dev/tty: %w", err)
		}
		r.files[f.Id] = ours
	}
	return nil
}

// closeHalves shuts down for writing the TCP connections that had sent their FIN: the FIN
// goes out again, to the other end in the tree (made established before its FIN), and both
// come to the states they had (FIN_WAIT2, CLOSE_WAIT).
func (r *restorer) closeHalves() error {
	senders := map[[2]string]bool{} // the ends that send their FIN again, by addresses
	for _, f := range r.c.Tree.Files {
		if in := f.InetSocket; in != nil && in.Tcp != nil && in.Tcp.FinSent {
			senders[[2]string{in.Local, in.Peer}] = true
			// A peer outside had it already: it acknowledges this one again.
			if err := linux.Shutdown(r.files[f.Id], 1); err != nil {
				return fmt.Errorf("restore: TCP connection %s -> %s: send its FIN again: %w", in.Local, in.Peer, err)
			}
		}
	}
	// A peer outside the tree will not send its FIN twice: it is made here, as it came.
	for _, f := range r.c.Tree.Files {
		in := f.InetSocket
		if in == nil || in.Tcp == nil || !in.Tcp.FinReceived || senders[[2]string{in.Peer, in.Local}] {
			continue
		}
		local, err1 := netip.ParseAddrPort(in.Local)
		peer, err2 := netip.ParseAddrPort(in.Peer)
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("restore: TCP connection %s -> %s: %w", in.Local, in.Peer, err)
		}
		c := in.Tcp
		una := c.SendSeq - uint32(len(c.SendQueue)) // what the peer had acknowledged
		if err := linux.InjectFIN(local, peer, c.RecvSeq, una, uint16(min(c.SndWnd>>c.SndWscale, 0xffff))); err != nil {
			return fmt.Errorf("restore: TCP connection %s -> %s: make its peer's FIN again: %w", in.Local, in.Peer, err)
		}
	}
	return nil
}
