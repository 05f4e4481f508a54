package core

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/pagesrv"
	"github.com/gocr/gocr/core/internal/pluginhost"
	"github.com/gocr/gocr/core/internal/procfs"
	"github.com/gocr/gocr/core/internal/tracer"
)

// DefaultGhostLimit is the largest deleted file a dump saves unless told otherwise: a
// binary replaced by an upgrade fits, a deleted log of gigabytes does not.
const DefaultGhostLimit = 64 << 20

// FinalState is what happens to a dumped tree once its image is safe.
type FinalState int

const (
	// Kill the tree (the default, as in CRIU).
	Kill FinalState = iota
	// LeaveRunning lets the tree go on.
	LeaveRunning
	// LeaveStopped leaves every process stopped with SIGSTOP, detached.
	LeaveStopped
)

// Version is gocr's version, recorded in images.
var Version = "0.1.0-dev"

// DumpOptions says what to dump and where.
type DumpOptions struct {
	// Roots are the PIDs whose trees (the process and all its descendants) are dumped.
	Roots []int
	// Dir is the images directory.
	Dir string
	// Final is the state the tree is left in after a successful dump.
	Final FinalState
	// Overwrite allows replacing an image already in Dir.
	Overwrite bool
	// IntoDir writes the image into Dir, an existing directory, as CRIU does: the directory
	// stays the same one (a caller may hold it open) with its other files (a log); an image
	// there is replaced. Without it, the image directory takes Dir's place whole.
	IntoDir bool
	// NoSync skips fsync of the image. Only sensible with LeaveRunning or LeaveStopped.
	NoSync bool
	// Progress, if set, is called as work advances (from any goroutine).
	Progress func(Progress)
	// CheckOnly collects and checks everything but memory, writes a small image of kind
	// check-only, and always leaves the tree running.
	CheckOnly bool
	// TCPEstablished takes established TCP connections with TCP repair (CRIU's
	// --tcp-established); without it they are refused.
	TCPEstablished bool
	// ShellJob allows a tree that runs on a terminal held by a session leader outside the
	// tree, as a shell's job does (CRIU's --shell-job); without it such a tree is refused.
	ShellJob bool
	// Plugins are the plugins to start (gocr-plugin-NAME, found in PluginDirs).
	Plugins    []string
	PluginDirs []string
	// PluginTimeout bounds each plugin call (default 30 s).
	PluginTimeout time.Duration
	// SkipInFlight dumps listeners that have connections not accepted yet, without them: their
	// clients see a reset (CRIU's --skip-in-flight); without it they are refused.
	SkipInFlight bool
	// ActionScripts run at pre-dump and post-dump (see actions.go), with their output to
	// ScriptOutput.
	ActionScripts []string
	ScriptOutput  io.Writer
	// Notify, when set, is called at each of those stages after the scripts, with the root's
	// pid; an error stops the operation as a failed script does.
	Notify func(stage string, pid int) error
	// LinkRemap takes files whose name was removed, while other names lead to them, through
	// a hard link made next to the old name and removed at restore (CRIU's --link-remap);
	// without it they are refused.
	LinkRemap bool
	// GhostLimit bounds the size of a deleted file whose content is saved in the image (an
	// open or mapped file that no path leads to any more; memfds are not bounded), as CRIU's
	// --ghost-limit: a larger one is refused by name. 0 means DefaultGhostLimit; negative, no
	// bound.
	GhostLimit int64
	// PreDump is CRIU's pre-dump: the tree is let go as soon as its state is collected and
	// its written pages marked, and its memory is read while it runs. The image (kind
	// pre-dump) is not consistent on its own: it serves as the Parent of a later dump.
	// Implies LeaveRunning and TrackMem.
	PreDump bool
	// TrackMem leaves memory tracking armed in the processes (with LeaveRunning or
	// LeaveStopped), so that a later dump with this image as Parent takes only the pages
	// written since (CRIU's --track-mem).
	TrackMem bool
	// Parent is an earlier image of the same tree, taken with TrackMem: pages not written
	// since are not dumped again but referred to (CRIU's --prev-images-dir). A relative
	// path is taken from Dir, as CRIU does.
	Parent string
	// Tracked writes only the pages written since the processes' memory tracking was last
	// reset (Track, or a dump with TrackMem), and of the mappings made since, all their
	// pages: an image of kind tracked, for Apply or to be read, never restored itself. Every
	// process must hold a tracker.
	Tracked bool
	// Compress stores the page files compressed with zstd (fastest level, on every core);
	// restore, apply and check read them transparently.
	Compress bool
	// PageServer (HOST:PORT) sends the image, once complete, to a page server (ServePages,
	// gocr page-server) holding PageServerToken; the tree's final state is applied only once
	// the server has it whole. Dir then keeps a local copy, or, if "", the image is written
	// to a temporary directory removed after.
	PageServer      string
	PageServerToken []byte
}

// Progress reports how far an operation is.
type Progress struct {
	Stage       string
	Done, Total uint64 // bytes
}

// DumpStats are figures of a finished dump.
type DumpStats struct {
	Processes int
	Pages     uint64
	Bytes     uint64 // bytes of memory written
	Stored    uint64 // what the page files take on disk (less than Bytes when compressed)
	Frozen    time.Duration
	Collect   time.Duration
	Memory    time.Duration
	Commit    time.Duration
	Total     time.Duration
	// Warnings are what the user should know of a dump that worked (no network lock).
	Warnings []string
}

// Dump freezes the trees, writes their image to opts.Dir and then applies opts.Final. If it
// fails, or ctx is cancelled, the trees go on running as they were and no image is left.
func Dump(ctx context.Context, opts DumpOptions) (*DumpStats, error) {
	start := time.Now()
	if len(opts.Roots) == 0 {
		return nil, fmt.Errorf("dump: no process given: %w", ErrBadArgs)
	}
	if err := needFeatures("dump"); err != nil {
		return nil, err
	}
	if opts.Tracked && (opts.Parent != "" || opts.CheckOnly || opts.PreDump) {
		return nil, fmt.Errorf("dump: a tracked dump stands alone: not with a parent image, check-only or pre-dump: %w", ErrBadArgs)
	}
	if opts.PreDump {
		if opts.CheckOnly {
			return nil, fmt.Errorf("dump: a pre-dump cannot be check-only: %w", ErrBadArgs)
		}
		opts.Final, opts.TrackMem = LeaveRunning, true
	}
	if opts.PageServer != "" && opts.Dir == "" {
		tmp, err := os.MkdirTemp("", "gocr-push-")
		if err != nil {
			return nil, fmt.Errorf("dump: %w", err)
		}
		defer os.RemoveAll(tmp)
		opts.Dir = filepath.Join(tmp, "img")
	}
	for _, pid := range opts.Roots {
		if pid <= 0 {
			return nil, fmt.Errorf("dump: pid %d: %w", pid, ErrBadArgs)
		}
		if _, err := os.Stat(procfs.Path(pid, "")); err != nil {
			return nil, fmt.Errorf("dump: pid %d: %w", pid, ErrNoProcess)
		}
	}
	acts := actions{scripts: opts.ActionScripts, out: opts.ScriptOutput, dir: opts.Dir, notify: opts.Notify}
	if err := acts.run(ctx, "pre-dump", opts.Roots[0]); err != nil {
		return nil, fmt.Errorf("dump: %w", err)
	}
	svc := &dumpServices{}
	host, err := pluginhost.Start(ctx, opts.Plugins, PluginDirs(opts.PluginDirs), "dump", opts.PluginTimeout, svc)
	if err != nil {
		return nil, fmt.Errorf("dump: %w", err)
	}
	create := func() (*image.Writer, error) { return image.Create(opts.Dir, opts.Overwrite) }
	if opts.IntoDir {
		create = func() (*image.Writer, error) { return image.CreateIn(opts.Dir) }
	}
	w, err := create()
	if err != nil {
		host.Close(false)
		return nil, fmt.Errorf("dump: %w", err)
	}
	w.Sync = !opts.NoSync
	d := newDumper(ctx, opts, w, host)
	defer d.thread.Close()
	svc.d, d.acts = d, acts
	if opts.Parent != "" {
		if d.parent, d.parentRel, err = openParent(opts.Dir, opts.Parent); err != nil {
			host.Close(false)
			w.Abort()
			return nil, fmt.Errorf("dump: %w", err)
		}
	}
	d.files.tcpEstablished, d.files.skipInFlight, d.files.linkRemap = opts.TCPEstablished, opts.SkipInFlight, opts.LinkRemap
	switch {
	case opts.GhostLimit == 0:
		d.files.ghostLimit = DefaultGhostLimit
	case opts.GhostLimit > 0:
		d.files.ghostLimit = opts.GhostLimit
	}
	d.files.host, d.files.ctx = host, ctx
	err = d.run(ctx)
	host.Close(err == nil)
	// A killed tree's connections stay in repair mode: closing them sends nothing, and the
	// restored process takes them over. Any other way, they go on.
	if err != nil || opts.Final != Kill || opts.CheckOnly {
		d.files.repairOff()
	}
	d.files.close()
	for _, mem := range d.attached {
		linux.ShmDetach(mem)
	}
	if err != nil {
		w.Abort()
		for _, l := range d.files.remaps {
			os.Remove(l) // no image needs them
		}
		if rerr := d.thread.Do(func() error { return d.release(false) }); rerr != nil {
			err = fmt.Errorf("%w (and letting the tree go failed: %v)", err, rerr)
		}
		if ctx.Err() != nil && !errors.Is(err, ErrInterrupted) {
			err = fmt.Errorf("%w: %w", ErrInterrupted, err)
		}
		return nil, err
	}
	d.stats.Total = time.Since(start)
	return d.stats, nil
}

// newDumper is a dumper of opts's trees into w, with the plugins of host.
func newDumper(ctx context.Context, opts DumpOptions, w *image.Writer, host *pluginhost.Host) *dumper {
	return &dumper{
		opts:   opts,
		w:      w,
		thread: tracer.NewThread(),
		procs:  map[int]*procDump{},
		vpids:  map[int]int32{},
		tree:   &imagepb.Tree{},
		files:  newFileTable(),
		shmem:  map[[2]uint64]*imagepb.SharedMemory{},
		stats:  &DumpStats{},
		host:   host,
		ctx:    ctx,
	}
}

type dumper struct {
	opts   DumpOptions
	w      *image.Writer
	thread *tracer.Thread
	order  []int // pids, parents before children
	procs  map[int]*procDump
	tree   *imagepb.Tree
	files  *fileTable
	shmem  map[[2]uint64]*imagepb.SharedMemory
	// shmemSrc says where each shared memory object can be read from.
	shmemSrc []shmemSource
	// ownNs are gocr's namespace links (its tracer thread's), by kind.
	ownNs map[string]string
	// attached are the System V segments gocr attached to read them (none of the tree's
	// processes attaches them), detached when the dump ends.
	attached [][]byte
	// mapped holds the files mapped by the processes, by device and inode.
	mapped map[[2]uint64]*imagepb.MappedFile
	// saved holds the mapped files without a path, by device and inode.
	saved map[[2]uint64]*imagepb.SavedFile
	stats *DumpStats
	cpu   int // tracer and tracees share it while syscalls are injected
	host  *pluginhost.Host
	ctx   context.Context
	// parent is the image an incremental dump refers to (nil: a full dump), and parentRel
	// its path relative to the new image, as the index records it.
	parent    *image.Checkpoint
	parentRel string
	acts      actions
	// zombies are the dead children of the tree's processes, not reaped yet.
	zombies []*imagepb.ProcessEntry
	// nsRoot are the namespace links of a root with namespaces of its own (nil: gocr's), and
	// vpids the pid of each process and thread in its pid namespace (see namespaces.go).
	nsRoot map[string]string
	vpids  map[int]int32
	// gadgets are where, in each executable file mapping (device, inode, offset), the safe
	// return's instructions are, relative to the mapping's start plus one (0: none).
	gadgets map[[3]uint64][2]uint64
}

type shmemSource struct {
	shm        *imagepb.SharedMemory
	pid        int
	start, end uint64
}

// procDump is one frozen process and what was collected from it.
type procDump struct {
	t     *tracer.Tracee
	entry *imagepb.ProcessEntry
	img   *imagepb.Process
	maps  []procfs.Mapping
	mask  uint64 // the blocked mask, as dumped
	pidfd int
	// securebits are read by an injected call, before the credentials are put together.
	securebits uint32
	runs       []pageRun // the pages to read, in image order
	pages      uint64
	// Memory tracking: the trackers found in the process, the one its parent image left
	// (alive), and where it is once this dump moved or made it.
	trackers               []tracker
	ownTracker, newTracker *tracker
	// threads are all but the main thread, by tid.
	threads []*threadDump
	// mainInScratch: the main thread's safe return is in the scratch area (not on its stack).
	mainInScratch bool
}

// threadDump is a thread other than the main one.
type threadDump struct {
	t    *tracer.Tracee
	img  *imagepb.Thread
	mask uint64
}

type pageRun struct {
	addr, n  uint64 // n pages
	direct   bool   // readable with process_vm_readv; else through /proc/PID/mem
	inParent bool   // not read: the parent image holds them
}

func (d *dumper) run(ctx context.Context) error {
	t0 := time.Now()
	cpu, err := d.thread.Pin()
	if err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	d.cpu = cpu
	if err := d.freeze(); err != nil {
		return err
	}
	if err := d.host.Devices(ctx, pluginhost.CheckpointDevices, d.order); err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	d.stats.Frozen = time.Since(t0)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dump: %w", ErrInterrupted)
	}
	t1 := time.Now()
	for _, pid := range d.order {
		p := d.procs[pid]
		if err := d.thread.Do(func() error { return d.collect(p) }); err != nil {
			return pidError(pid, err)
		}
		if err := d.collectFiles(p); err != nil {
			return pidError(pid, err)
		}
		if err := d.collectMemory(p); err != nil {
			return pidError(pid, err)
		}
		if d.tracking() {
			if err := d.armTracking(p); err != nil {
				return pidError(pid, err)
			}
		}
		if err := d.dumpClaimedVMAs(ctx, p); err != nil {
			return pidError(pid, err)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("dump: %w", ErrInterrupted)
		}
	}
	if err := d.thread.Do(d.collectIPC); err != nil {
		return err
	}
	d.files.fixPtys()
	if err := d.files.checkPeers(); err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	if err := d.checkEpolls(); err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	if err := d.checkFdTables(); err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	d.warnOutsidePipes()
	if err := d.checkPidfds(); err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	d.tree.Plugins = d.files.pluginsUsed()
	d.tree.NetLock = d.files.lock
	if err := d.files.writeData(d.w, d.tree); err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	d.stats.Collect = time.Since(t1)
	// Devices stay paused until the memory they may write (GPU queues) is read.
	late := func() error {
		if err := d.host.Devices(ctx, pluginhost.DumpDevicesLate, d.order); err != nil {
			return fmt.Errorf("dump: %w", err)
		}
		return nil
	}
	if d.opts.PreDump {
		if err := late(); err != nil {
			return err
		}
		// Every page written from now on is marked: let the tree go, and read its memory
		// while it runs (a page it writes meanwhile is taken again by the next dump).
		if err := d.thread.Do(d.finish); err != nil {
			return err
		}
	}
	t2 := time.Now()
	if !d.opts.CheckOnly {
		if err := d.writeMemory(ctx); err != nil {
			return err
		}
	}
	if !d.opts.PreDump {
		if err := late(); err != nil {
			return err
		}
	}
	d.stats.Memory = time.Since(t2)
	for _, pid := range d.order {
		p := d.procs[pid]
		d.tree.Processes = append(d.tree.Processes, p.entry)
		if err := d.w.WriteMessage(image.ProcName(d.vpid(pid)), p.img); err != nil {
			return fmt.Errorf("dump pid %d: %w", pid, err)
		}
	}
	d.tree.Processes = append(d.tree.Processes, d.zombies...)
	if err := d.w.WriteMessage(image.TreeName, d.tree); err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dump: %w", ErrInterrupted)
	}
	t3 := time.Now()
	idx := &imagepb.Index{Kind: imagepb.Kind_KIND_FULL, GocrVersion: Version, KernelRelease: linux.KernelRelease()}
	for _, pid := range d.order {
		for _, r := range d.procs[pid].img.Pages {
			if r.InParent {
				idx.Kind, idx.Parent = imagepb.Kind_KIND_INCREMENTAL, d.parentRel
			}
		}
	}
	if d.opts.CheckOnly {
		idx.Kind = imagepb.Kind_KIND_CHECK_ONLY
	}
	if d.opts.PreDump {
		idx.Kind = imagepb.Kind_KIND_PRE_DUMP
	}
	if d.opts.Tracked {
		idx.Kind = imagepb.Kind_KIND_TRACKED
	}
	if d.parent != nil && idx.Parent == "" {
		d.warn("nothing was taken from the parent image %s: its memory tracking is not the one running now (was it dumped with --track-mem, and is it the last such image?); this image is whole", d.opts.Parent)
	}
	if err := d.w.Commit(idx, !d.opts.NoSync); err != nil {
		return fmt.Errorf("dump: write image: %w", err)
	}
	d.stats.Commit = time.Since(t3)
	if d.opts.PageServer != "" {
		if err := pagesrv.Push(d.opts.PageServer, d.opts.PageServerToken, d.opts.Dir); err != nil {
			os.RemoveAll(d.opts.Dir) // a half-sent image is not an image of the dump
			return fmt.Errorf("dump: %w (the tree goes on running)", err)
		}
	}
	d.stats.Processes = len(d.order)
	if err := d.acts.run(ctx, "post-dump", d.order[0]); err != nil {
		return fmt.Errorf("dump: %w (the image in %s is complete; the tree goes on running)", err, d.opts.Dir)
	}
	if err := d.files.lockErr; err != nil {
		d.stats.Warnings = append(d.stats.Warnings, fmt.Sprintf("TCP connections taken without a network lock (%v): a packet the peer sends before the restore draws a reset that ends its connection", err))
	}
	// The image is safe: from here on a failure must not undo it.
	if d.opts.PreDump {
		return nil // let go before the memory was read
	}
	return d.thread.Do(d.finish)
}

// warnOutsidePipes warns of pipes whose other end is outside the dumped trees (a server's
// stdout piped to a logger): the restore makes a new pipe, whose other end nobody holds, unless
// the caller hands one in with --inherit-fd (as CRIU).
func (d *dumper) warnOutsidePipes() {
	type ends struct{ r, w *openFile }
	pipes := map[uint32]*ends{}
	var order []uint32
	for _, f := range d.files.all {
		if f.img.Kind != imagepb.FileKind_FILE_KIND_PIPE {
			continue
		}
		e := pipes[f.img.PipeId]
		if e == nil {
			e = &ends{}
			pipes[f.img.PipeId] = e
			order = append(order, f.img.PipeId)
		}
		if f.img.Flags&linux.OAccmode == linux.OWronly {
			e.w = f
		} else {
			e.r = f
		}
	}
	for _, id := range order {
		e := pipes[id]
		f, other := e.w, "reader"
		if e.w == nil {
			f, other = e.r, "writer"
		} else if e.r != nil {
			continue
		}
		ino := f.img.Ino
		d.warn("pid %d fd %d: pipe:[%d]'s %s is outside the dumped trees: the restored end will have none, unless you give one: gocr restore --inherit-fd fd[N]:pipe:[%d] (N: an fd of gocr on a new pipe's %s end)",
			f.pid, f.fd, ino, other, ino, map[string]string{"reader": "read", "writer": "write"}[other])
	}
}

// checkEpolls finds the file each epoll item watches (kcmp KCMP_EPOLL_TFD: the item is
// keyed by the file and the fd number it was added under, which may hold another file now,
// or none), and refuses, at dump time, an epoll instance that no process holding it could
// fill at restore: one where each watched number holds the watched file, or nothing (the
// restore puts the file there for the time of the watch).
func (d *dumper) checkEpolls() error {
	byIno := map[uint64][]*openFile{}
	for _, o := range d.files.all {
		byIno[o.img.Ino] = append(byIno[o.img.Ino], o)
	}
	for _, f := range d.files.all {
		if f.img.Kind != imagepb.FileKind_FILE_KIND_EPOLL || len(f.img.EpollItems) == 0 {
			continue
		}
		refuse := func(kind string) error {
			return &UnsupportedError{Pid: f.pid, What: "fd " + strconv.Itoa(f.fd), Kind: kind, Hint: "the restore could not watch it again"}
		}
		seen := map[int32]int{} // items so far under each number
		for i, it := range f.img.EpollItems {
			toff := seen[it.Tfd]
			seen[it.Tfd]++
			if i >= len(f.epollInos) {
				continue
			}
			for _, o := range byIno[f.epollInos[i]] {
				if same, err := linux.IsEpollTarget(o.dup, f.dup, int(it.Tfd), toff); err != nil {
					return fmt.Errorf("epoll fd %d of pid %d: %w", f.fd, f.pid, err)
				} else if same {
					it.FileId = o.img.Id
					break
				}
			}
			if it.FileId == 0 {
				return refuse(fmt.Sprintf("epoll instance watching fd %d, a file no process of the trees holds any more", it.Tfd))
			}
		}
		fillable := false
		for _, pid := range d.order {
			if holds, usable := epollUsable(d.procs[pid].img.Fds, f.img); holds && usable {
				fillable = true
				break
			}
		}
		if !fillable {
			return refuse("epoll instance watching an fd number that holds another file in every process holding it")
		}
	}
	return nil
}

// epollUsable says whether a process with fds holds the epoll ep, and could watch its items
// again: each watched number holds the watched file, or nothing.
func epollUsable(fds []*imagepb.Fd, ep *imagepb.OpenFile) (holds, usable bool) {
	have := map[int32]uint32{} // fd: file id
	for _, fd := range fds {
		have[fd.Fd] = fd.FileId
		holds = holds || fd.FileId == ep.Id
	}
	for _, it := range ep.EpollItems {
		got, ok := have[it.Tfd]
		if ok && it.FileId != 0 && got != it.FileId || !ok && it.FileId == 0 {
			return holds, false
		}
	}
	return holds, true
}

// checkFdTables refuses processes that share one fd table (clone with CLONE_FILES, not
// threads): the restore would give each its own, and an fd one of them opens later would no
// longer be the other's.
func (d *dumper) checkFdTables() error {
	for _, pid := range d.order {
		st, err := procfs.ReadStat(pid)
		if err != nil || d.procs[st.PPid] == nil {
			continue
		}
		if same, err := linux.SameFdTable(st.PPid, pid); err != nil {
			return fmt.Errorf("pid %d: %w", pid, err)
		} else if same {
			return &UnsupportedError{Pid: pid, What: "fd table", Kind: fmt.Sprintf("fd table shared with its parent %d (clone with CLONE_FILES)", st.PPid),
				Hint: "the restore would give each process its own"}
		}
	}
	return nil
}

// checkPidfds refuses a pidfd of a process outside the dumped trees: the restore makes
// pidfds of the processes it makes, never of others (whose pid may be someone else by then);
// and so an O_ASYNC owner. The pids the files name become the image's (those of the tree's
// pid namespace).
func (d *dumper) checkPidfds() error {
	in := map[int32]bool{}
	for _, pid := range d.order {
		in[int32(pid)] = true
		for _, th := range d.procs[pid].threads {
			in[int32(th.t.Pid)] = true
		}
	}
	for _, f := range d.files.all {
		if f.img.Kind == imagepb.FileKind_FILE_KIND_PIDFD && !in[f.img.PidfdPid] {
			return &UnsupportedError{Pid: f.pid, What: "fd " + strconv.Itoa(f.fd), Kind: fmt.Sprintf("pidfd of process %d, outside the dumped trees", f.img.PidfdPid),
				Hint: "dump that process's tree too (-t PID,PID)"}
		}
		// A process group is named by its leader's pid.
		if o := f.img.Owner; o != nil && o.Pid != 0 && !in[o.Pid] {
			return &UnsupportedError{Pid: f.pid, What: "fd " + strconv.Itoa(f.fd), Kind: fmt.Sprintf("file %s whose O_ASYNC signals go to %d, outside the dumped trees", f.img.Path, o.Pid),
				Hint: "dump that process's tree too (-t PID,PID)"}
		}
	}
	for _, f := range d.files.all {
		if f.img.Kind == imagepb.FileKind_FILE_KIND_PIDFD {
			f.img.PidfdPid = d.vpid(int(f.img.PidfdPid))
		}
		if o := f.img.Owner; o != nil && o.Pid != 0 {
			o.Pid = d.vpid(int(o.Pid))
		}
		if f.img.Kind == imagepb.FileKind_FILE_KIND_PLUGIN {
			f.img.PluginPid = d.vpid(int(f.img.PluginPid))
		}
	}
	return nil
}

func (d *dumper) tracking() bool {
	return d.opts.TrackMem && d.opts.Final != Kill && !d.opts.CheckOnly
}

// warn notes something the user should know of a dump that works.
func (d *dumper) warn(format string, args ...any) {
	d.stats.Warnings = append(d.stats.Warnings, fmt.Sprintf(format, args...))
}

// freeze seizes every process of every tree, parents first. A frozen parent cannot fork, so
// once a process is stopped its list of children is final.
func (d *dumper) freeze() error {
	if err := d.treeNamespaces(); err != nil {
		return err
	}
	inTree := map[int]int{} // pid -> root
	for _, root := range d.opts.Roots {
		if r, ok := inTree[root]; ok {
			return fmt.Errorf("dump: pid %d is inside the tree of %d: %w", root, r, ErrBadArgs)
		}
		queue := []int{root}
		for len(queue) > 0 {
			pid := queue[0]
			queue = queue[1:]
			if pid == os.Getpid() {
				return fmt.Errorf("dump: pid %d is gocr itself: %w", pid, ErrBadArgs)
			}
			if r, ok := inTree[pid]; ok && r != root {
				return fmt.Errorf("dump: pid %d is inside the tree of %d: %w", pid, r, ErrBadArgs)
			}
			inTree[pid] = root
			// A zombie is dead: nothing to freeze, it comes back as a zombie.
			if z, err := zombieEntry(pid, root); err != nil || z != nil {
				if err == nil {
					err = d.notePids(pid, nil)
				}
				if err != nil {
					return err
				}
				z.Pid, z.Ppid, z.Pgid, z.Sid, z.Threads = d.vpid(pid), d.vpid(int(z.Ppid)), d.vpid(int(z.Pgid)), d.vpid(int(z.Sid)), []int32{d.vpid(pid)}
				d.zombies = append(d.zombies, z)
				continue
			}
			// Plugins pause the process's devices before it is frozen.
			if err := d.host.Devices(d.ctx, pluginhost.PauseDevices, []int{pid}); err != nil {
				return fmt.Errorf("dump pid %d: %w", pid, err)
			}
			var p *procDump
			err := d.thread.Do(func() error {
				var err error
				p, err = d.seize(pid)
				return err
			})
			if err != nil {
				return err
			}
			d.procs[pid] = p
			d.order = append(d.order, pid)
			var tids []int
			for _, th := range p.threads {
				tids = append(tids, th.t.Pid)
			}
			if err := d.notePids(pid, tids); err != nil {
				return err
			}
			kids, err := procfs.Children(pid)
			if err != nil {
				return fmt.Errorf("dump pid %d: list children: %w", pid, err)
			}
			queue = append(queue, kids...)
		}
		d.tree.Roots = append(d.tree.Roots, d.vpid(root))
	}
	// A root given later may be a descendant of a root given earlier.
	for _, root := range d.opts.Roots {
		if r := inTree[root]; r != root {
			return fmt.Errorf("dump: pid %d is inside the tree of %d: %w", root, r, ErrBadArgs)
		}
	}
	return nil
}

// zombieEntry returns the entry of pid if it is a zombie (nil if not): what the restore
// needs to make it again from its parent and let it die as it did. A zombie the restore
// could not put back as it was is refused by name.
func zombieEntry(pid, root int) (*imagepb.ProcessEntry, error) {
	stat, err := procfs.ReadStat(pid)
	if err != nil || stat.State != 'Z' {
		return nil, nil
	}
	unsupported := func(why string) error {
		return &UnsupportedError{Pid: pid, What: "process", Kind: "zombie " + why, Hint: "let its parent reap it first"}
	}
	if pid == root {
		return nil, unsupported("given as a root")
	}
	parent, err := procfs.ReadStat(stat.PPid)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: its parent %d: %w", pid, stat.PPid, err)
	}
	if stat.Sid != parent.Sid || (stat.PGid != parent.PGid && stat.PGid != pid) {
		return nil, unsupported(fmt.Sprintf("in process group %d of session %d (its parent's are %d and %d)", stat.PGid, stat.Sid, parent.PGid, parent.Sid))
	}
	return &imagepb.ProcessEntry{Pid: int32(pid), Ppid: int32(stat.PPid), Pgid: int32(stat.PGid), Sid: int32(stat.Sid),
		Threads: []int32{int32(pid)}, Comm: stat.Comm, Zombie: true, ExitStatus: int32(stat.ExitCode)}, nil
}

func (d *dumper) seize(pid int) (*procDump, error) {
	st, err := procfs.ReadStatus(pid)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("dump pid %d: %w", pid, ErrNoProcess)
		}
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	if st.TracerPid != 0 {
		return nil, fmt.Errorf("dump pid %d: traced by pid %d (detach the debugger or strace first): %w", pid, st.TracerPid, ErrTraced)
	}
	stat, err := procfs.ReadStat(pid)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, ErrNoProcess)
	}
	t, err := tracer.Seize(pid, stat.State == 'T')
	switch {
	case errors.Is(err, linux.EPERM):
		return nil, fmt.Errorf("dump pid %d: may not trace it (run gocr as root or as its owner with ptrace rights): %w", pid, ErrPermission)
	case errors.Is(err, linux.ESRCH), errors.Is(err, tracer.ErrExited):
		return nil, fmt.Errorf("dump pid %d: %w", pid, ErrNoProcess)
	case err != nil:
		return nil, fmt.Errorf("dump pid %d: seize: %w", pid, err)
	}
	p := &procDump{t: t, pidfd: -1}
	d.procs[pid] = p // released on error from here on
	// Seize every thread; a thread not yet stopped may start another, so list again until
	// a listing brings nothing new.
	seen := map[int]bool{pid: true}
	for {
		tids, err := procfs.Threads(pid)
		if err != nil {
			return nil, fmt.Errorf("dump pid %d: list threads: %w", pid, err)
		}
		added := false
		for _, tid := range tids {
			if seen[tid] {
				continue
			}
			seen[tid] = true
			added = true
			tt, err := tracer.Seize(tid, p.t.WasStopped)
			if errors.Is(err, tracer.ErrExited) || errors.Is(err, linux.ESRCH) {
				continue // it ended meanwhile
			}
			if err != nil {
				return nil, fmt.Errorf("dump pid %d: seize thread %d: %w", pid, tid, err)
			}
			p.threads = append(p.threads, &threadDump{t: tt})
		}
		if !added {
			break
		}
	}
	sort.Slice(p.threads, func(i, j int) bool { return p.threads[i].t.Pid < p.threads[j].t.Pid })
	return p, nil
}

// release lets every frozen process go as it was before the dump.
func (d *dumper) release(stop bool) error {
	var first error
	for _, pid := range d.order {
		p := d.procs[pid]
		if err := d.releaseOne(p, stop); err != nil && first == nil {
			first = err
		}
	}
	// A process that failed to be fully seized is in procs but not in order.
	for pid, p := range d.procs {
		if !contains(d.order, pid) && p != nil {
			if err := d.releaseOne(p, stop); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

func (d *dumper) releaseOne(p *procDump, stop bool) error {
	var first error
	for _, th := range p.threads {
		if err := releaseThread(&th.t, false); err != nil && first == nil {
			first = err
		}
	}
	// The main thread last: with stop, its SIGSTOP stops the whole group.
	if err := releaseThread(&p.t, stop); err != nil && first == nil {
		first = err
	}
	return first
}

// releaseThread puts a thread back as it was (registers, restart emulated) and detaches it.
func releaseThread(tp **tracer.Tracee, stop bool) error {
	t := *tp
	if t == nil {
		return nil
	}
	*tp = nil
	mask, err := linux.GetSigMask(t.Pid)
	if err != nil {
		if errors.Is(err, linux.ESRCH) {
			return nil
		}
		return fmt.Errorf("thread %d: read signal mask: %w", t.Pid, err)
	}
	if err := t.Release(t.Regs, mask, true, stop); err != nil && !errors.Is(err, linux.ESRCH) {
		return fmt.Errorf("thread %d: %w", t.Pid, err)
	}
	return nil
}

// finish applies the final state once the image is safe.
func (d *dumper) finish() error {
	final := d.opts.Final
	if d.opts.CheckOnly {
		final = LeaveRunning
	}
	switch final {
	case LeaveRunning, LeaveStopped:
		// The connections leave repair mode before the processes run again: a socket still
		// in it fails their reads (EPERM) and writes (EINVAL).
		d.files.repairOff()
		return d.release(final == LeaveStopped)
	}
	// The image is safe: from here the tree is to die, whole. Should gocr die while killing
	// it, the kernel kills every thread still traced (PTRACE_O_EXITKILL), so that no part of
	// the tree survives the rest.
	for _, pid := range d.order {
		p := d.procs[pid]
		if p.t == nil {
			continue
		}
		linux.SetOptions(p.t.Pid, tracer.SeizeOptions|linux.OptExitKill)
		for _, th := range p.threads {
			linux.SetOptions(th.t.Pid, tracer.SeizeOptions|linux.OptExitKill)
		}
	}
	// Kill children before parents, and take each exit notification as the tracer so that
	// the real parent can reap.
	var first error
	for i := len(d.order) - 1; i >= 0; i-- {
		p := d.procs[d.order[i]]
		if p.t == nil {
			continue
		}
		pid := p.t.Pid
		if err := linux.Kill(pid, linux.SIGKILL); err != nil && first == nil {
			first = fmt.Errorf("kill pid %d: %w", pid, err)
			continue
		}
		for _, th := range p.threads {
			waitExit(th.t.Pid)
			th.t = nil
		}
		waitExit(pid)
		p.t = nil
	}
	return first
}

// PluginDirs are where plugins are looked for: the directories given, $GOCR_PLUGIN_DIR, and
// the directory of the gocr binary.
func PluginDirs(given []string) []string {
	dirs := append([]string(nil), given...)
	if d := os.Getenv("GOCR_PLUGIN_DIR"); d != "" {
		dirs = append(dirs, filepath.SplitList(d)...)
	}
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe))
	}
	return dirs
}

// pidError names the process in err, unless err already does.
func pidError(pid int, err error) error {
	var ue *UnsupportedError
	if errors.As(err, &ue) {
		return fmt.Errorf("dump: %w", ue)
	}
	return fmt.Errorf("dump pid %d: %w", pid, err)
}

// waitExit takes the exit notification of a traced thread.
func waitExit(tid int) {
	for {
		_, ws, err := linux.Wait4(tid, 0)
		if err != nil || ws.Exited() || ws.Signaled() {
			return
		}
	}
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[int]V) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}
