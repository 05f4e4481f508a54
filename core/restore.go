package core

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/netlock"
	"github.com/gocr/gocr/core/internal/pagesrv"
	"github.com/gocr/gocr/core/internal/pluginhost"
	"github.com/gocr/gocr/core/internal/procfs"
	"github.com/gocr/gocr/core/internal/tracer"
)

// StubName is argv[0] of the stub process a restore starts; gocr's main must exit at once
// when it sees it.
const StubName = "gocr-restore-stub"

// RestoreOptions says what to restore and how to leave it.
type RestoreOptions struct {
	Dir string
	// LazyPages starts the tree before its memory is in: private anonymous memory is served
	// by gocr on first touch and copied in the background (see lazy.go); Restored.WaitPages
	// says when every page is in. Parent images' pages too; not with compressed images.
	LazyPages bool
	// PageServer (HOST:PORT, with LazyPages) takes the image from a page server serving it
	// (gocr page-server -D DIR on the machine that holds it), holding PageServerToken: its
	// metadata is fetched into Dir (a temporary directory if ""), its pages as they are
	// needed. An image without parents, not compressed.
	PageServer      string
	PageServerToken []byte
	// LeaveStopped leaves every restored process stopped (SIGSTOP); gocr resume goes on.
	LeaveStopped bool
	// Progress, if set, is called as work advances.
	Progress func(Progress)
	// ShellJob restores a tree dumped with ShellJob onto the terminal TTY (a path, such as
	// the one gocr runs on): the fds that were on the old terminal are opened on it.
	ShellJob bool
	TTY      string
	// PluginDirs are where the plugins the image needs are looked for (besides
	// $GOCR_PLUGIN_DIR and gocr's directory); PluginTimeout bounds each call.
	PluginDirs    []string
	PluginTimeout time.Duration
	// ActionScripts run at pre-restore, post-restore and post-resume (see actions.go), with
	// their output to ScriptOutput.
	ActionScripts []string
	ScriptOutput  io.Writer
	// Notify, when set, is called at each of those stages after the scripts, with the root's
	// pid; an error stops the operation as a failed script does.
	Notify func(stage string, pid int) error
	// NoCgroups leaves the restored processes in gocr's cgroups instead of putting them
	// back into theirs (CRIU's --manage-cgroups=none).
	NoCgroups bool
	// InheritFds gives, by key ("pipe:[INODE]", as /proc/PID/fd showed it at the dump), an
	// fd of the caller that takes the place of that file (CRIU's --inherit-fd): the end of a
	// pipe to a process outside the tree. The caller keeps its fd.
	InheritFds map[string]int
	// NewPidns restores the tree into a pid namespace of its own, where its pids are free
	// whatever runs on the machine: a gocr init is its pid 1 and the tree's root its child.
	// A tree dumped with its own pid namespace always gets a new one.
	NewPidns bool
}

// Restored is a tree brought back. Its roots are children of the calling process (with
// NewPidns, its one root is gocr's init, which ends as the tree's root does). The pids are
// those of the calling process's pid namespace.
type Restored struct {
	Roots []int
	Pids  []int
	Stats RestoreStats
	// Warnings are what the user should know of a restore that worked.
	Warnings []string
	lazy     *lazyServer
}

// WaitPages waits, after a restore with LazyPages, until every page is in the processes (nil
// at once otherwise). An error means the pages could not all be served: the tree was killed.
func (r *Restored) WaitPages() error {
	if r.lazy == nil {
		return nil
	}
	return r.lazy.wait()
}

// LazyStats says, during or after a lazy restore, how much memory was to be served and how
// much is in.
func (r *Restored) LazyStats() (copied, total uint64, elapsed time.Duration) {
	if r.lazy == nil {
		return 0, 0, 0
	}
	r.lazy.mu.Lock()
	defer r.lazy.mu.Unlock()
	return r.lazy.copied, r.lazy.total, r.lazy.elapsed
}

// RestoreStats are figures of a finished restore.
type RestoreStats struct {
	Processes int
	Bytes     uint64 // memory filled
	Verify    time.Duration
	Create    time.Duration
	Memory    time.Duration
	Total     time.Duration
	Syscalls  int // injected
}

// Wait waits for the first root to end and returns its wait status.
func (r *Restored) Wait() (syscall.WaitStatus, error) {
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(r.Roots[0], &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		return ws, err
	}
}

// Restore recreates the image's processes with their PIDs, memory, files and signals, and
// lets them run (or leaves them stopped). Nothing is created until the whole image has been
// checked; if anything fails later, every process created so far is killed and reaped.
func Restore(ctx context.Context, opts RestoreOptions) (*Restored, error) {
	start := time.Now()
	if err := needFeatures("restore"); err != nil {
		return nil, err
	}
	var remote *pagesrv.Client
	tmpDir := ""
	if opts.PageServer != "" {
		if !opts.LazyPages {
			return nil, fmt.Errorf("restore: from a page server, the pages come lazily: add --lazy-pages: %w", ErrBadArgs)
		}
		given := opts.Dir
		var err error
		if remote, opts.Dir, err = fetchImage(opts.PageServer, opts.PageServerToken, opts.Dir); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		if given == "" {
			tmpDir = filepath.Dir(opts.Dir)
		}
	}
	defer func() {
		if tmpDir != "" { // not handed to the lazy server
			os.RemoveAll(tmpDir)
		}
	}()
	defer func() {
		if remote != nil { // not handed to the lazy server
			remote.Close()
		}
	}()
	c, err := image.Open(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if c.Index.Kind == imagepb.Kind_KIND_CHECK_ONLY {
		return nil, fmt.Errorf("restore: %s is a check-only image: it holds no memory to restore: %w", opts.Dir, ErrBadArgs)
	}
	if c.Index.Kind == imagepb.Kind_KIND_PRE_DUMP {
		return nil, fmt.Errorf("restore: %s is a pre-dump: its memory was read while the tree ran on, so it is not consistent on its own; dump against it (--prev-images-dir) and restore that: %w", opts.Dir, ErrBadArgs)
	}
	if c.Index.Kind == imagepb.Kind_KIND_TRACKED {
		return nil, fmt.Errorf("restore: %s is a tracked dump: it holds only the pages written since the memory tracking was reset, so it is not a whole process; write it into the live process with gocr apply, or restore a full image: %w", opts.Dir, ErrBadArgs)
	}
	var skip func(string) bool
	if opts.LazyPages {
		skip = func(name string) bool { return strings.HasPrefix(name, "pages-") } // checked as they are used
	}
	if err := c.VerifyDataBut(skip); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if c.Tree.ShellJob && (!opts.ShellJob || opts.TTY == "") {
		return nil, fmt.Errorf("restore: the image is a shell job: restore it with --shell-job from a terminal: %w", ErrBadArgs)
	}
	acts := actions{scripts: opts.ActionScripts, out: opts.ScriptOutput, dir: opts.Dir, notify: opts.Notify}
	if err := acts.run(ctx, "pre-restore", int(c.Tree.Roots[0])); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	parents, err := loadParents(c)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	r := &restorer{c: c, parents: parents, acts: acts, opts: opts, procs: map[int32]*procRestore{}, hosts: map[int32]int{}, files: map[uint32]int{}, stats: &RestoreStats{}, ctx: ctx}
	r.stats.Verify = time.Since(start)
	err = r.readOwnCreds()
	if err == nil {
		err = r.preflight()
	}
	if err != nil {
		r.closeFiles()
		r.removeSysvShm(true)
		r.host.Close(false)
		if ctx.Err() != nil && !errors.Is(err, ErrInterrupted) {
			err = fmt.Errorf("%w: %w", ErrInterrupted, err)
		}
		return nil, err
	}
	r.thread = tracer.NewThread()
	defer r.thread.Close()
	err = linux.SetChildSubreaper()
	if err == nil {
		r.mask, err = linux.GetAffinity(0)
	}
	if err == nil {
		// The stub, and so every process cloned from it, runs on the tracer's CPU until the end.
		r.cpu, err = r.thread.Pin()
	}
	if err != nil {
		err = fmt.Errorf("restore: %w", err)
	}
	for _, e := range c.Index.Files {
		if strings.HasPrefix(e.Name, "shmem-") {
			r.total += e.Size
		}
	}
	for _, p := range c.Procs {
		for _, run := range p.Pages { // in this image or in its parents
			r.total += run.NrPages * linux.PageSize
		}
	}
	if err == nil && opts.LazyPages {
		r.lazy = newLazyServer()
		r.lazy.remote, remote = remote, nil // the lazy server closes it
		r.lazy.tmpDir, tmpDir = tmpDir, ""
		r.lazy.kill = func() {
			for _, p := range r.procs {
				if p.host > 0 {
					linux.Kill(p.host, linux.SIGKILL)
				}
			}
		}
	}
	if err == nil {
		// The tree's own namespaces first (the tracer thread joins them), then the files,
		// sockets and objects the processes will share, made there.
		err = r.thread.Do(r.prepareNamespaces)
	}
	if err == nil {
		err = r.thread.Do(r.openAll)
	}
	if err == nil {
		err = r.run(ctx)
	}
	if r.lazy != nil {
		if err != nil {
			r.lazy.abort()
		} else {
			r.lazy.seal()
		}
	}
	r.closeFiles()
	r.removeRemovedDirs() // made for working directories, whatever happened
	r.host.Close(err == nil)
	if r.initReady != nil {
		r.initReady.Close()
	}
	if err != nil {
		r.thread.Do(func() error { r.killAll(); return nil })
		r.removeCgroupsMade()
		if ns := c.Tree.Namespaces; ns == nil || !ns.Ipc { // else they went with the namespace
			r.removeSysvShm(true)
		}
		if ctx.Err() != nil && !errors.Is(err, ErrInterrupted) {
			err = fmt.Errorf("%w: %w", ErrInterrupted, err)
		}
		return nil, err
	}
	r.thread.Do(func() error { r.removeSysvShm(false); return nil }) // in the tree's IPC namespace
	for _, f := range c.Tree.Files {
		if f.LinkRemap {
			os.Remove(f.Path) // the link the dump made: the process holds the file now
		}
	}
	res := &Restored{Stats: *r.stats, lazy: r.lazy, Warnings: r.warnings}
	if r.init != 0 {
		res.Roots = []int{r.init}
	} else {
		for _, root := range c.Tree.Roots {
			res.Roots = append(res.Roots, r.hostPid(int(root)))
		}
	}
	for _, pe := range c.Tree.Processes {
		if !pe.Zombie { // a zombie is back, but runs nothing
			res.Pids = append(res.Pids, r.hostPid(int(pe.Pid)))
		}
	}
	res.Stats.Processes = len(res.Pids)
	res.Stats.Total = time.Since(start)
	if err := acts.run(ctx, "post-resume", res.Roots[0]); err != nil {
		res.Warnings = append(res.Warnings, err.Error()) // the tree runs: not undone
	}
	return res, nil
}

func (r *restorer) warnf(format string, args ...any) {
	r.warnMu.Lock()
	defer r.warnMu.Unlock()
	r.warnings = append(r.warnings, fmt.Sprintf(format, args...))
}

type restorer struct {
	c *image.Checkpoint
	// lazy serves the memory of a restore with LazyPages (nil otherwise).
	lazy *lazyServer
	// warnings of a restore that worked (warnf; processes are restored concurrently).
	warnMu   sync.Mutex
	warnings []string
	// parents are the images an incremental image refers to, nearest first.
	parents []*image.Checkpoint
	acts    actions
	opts    RestoreOptions
	thread  *tracer.Thread
	order   []int32 // creation order, parents first
	procs   map[int32]*procRestore
	files   map[uint32]int // OpenFile id -> our fd of it
	extra   []int          // fds we hold only to keep objects alive (pipe ends, FIFO holders)
	// cgroupsMade are the cgroups the restore made (to be removed if it fails).
	cgroupsMade []string
	// orphans are the other ends of pairs made for sockets whose peer was gone at the dump,
	// closed once their queues are refilled.
	orphans map[uint32]int
	pages   map[string]int // image data file -> our fd
	// decoded are the compressed page files and those of a page server (same keys), read by
	// gocr and written into the processes, as the kernel cannot read them from an fd.
	decoded map[string]pageReader
	fillBuf []byte
	saved   map[uint32]int // SavedFile id -> our fd of the recreated file
	sysv    []int          // System V segments made
	host    *pluginhost.Host
	shmem   map[uint32]shmemOwner
	// epollDone marks the epoll instances already filled.
	epollDone map[uint32]bool
	stats     *RestoreStats
	// hosts are the pids (and tids) of the restored processes as gocr sees them, by their
	// pid in the image; init is the host pid of gocr's init of a new pid namespace (0: none).
	hosts   map[int32]int
	hostsMu sync.Mutex // plugins' calls read it while threads are made
	init    int
	initT   *procRestore // the init while it is traced
	// initReady is read when the init has taken over its signals (it writes a byte on the
	// other end, its fd 4, then closes it).
	initReady *os.File
	stub      *procRestore // the stub, when it is made before the tree (see prepareNamespaces)
	mask      linux.CPUSet // gocr's CPU mask: the restored processes get it back
	cpu       int
	ctx       context.Context
	total     uint64 // bytes of memory to fill, for progress
	own       ownCreds
	// removedDirs are the directories made for removed working directories, to be removed
	// again once the processes are in them, deepest first.
	removedDirs []string
	// async are the process and fd number that set each O_ASYNC file's flag again.
	async map[uint32][2]int32
}

// readOwnCreds reads gocr's credentials.
func (r *restorer) readOwnCreds() error {
	st, err := procfs.ReadStatus(os.Getpid())
	if err != nil {
		return fmt.Errorf("restore: read own status: %w", err)
	}
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	last, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || last < 0 || last > 63 {
		return fmt.Errorf("restore: bad /proc/sys/kernel/cap_last_cap %q", b)
	}
	r.own = ownCreds{status: st, lastCap: last}
	return nil
}

// ownCreds are gocr's own credentials, which every restored thread starts with.
type ownCreds struct {
	status  *procfs.Status
	lastCap int // /proc/sys/kernel/cap_last_cap
}

type shmemOwner struct {
	pid        int32
	start, end uint64
}

type procRestore struct {
	img     *imagepb.Process
	entry   *imagepb.ProcessEntry
	t       *tracer.Tracee
	host    int // its pid as gocr sees it (the image's is entry.Pid)
	scratch uint64
	pidfd   uint64 // pidfd of gocr inside the process, -1 when none
	threads []*threadRestore
	// lazyUfd is gocr's fd of the process's userfaultfd in a lazy restore (-1: none).
	lazyUfd int
}

// Layout of the scratch area mapped in every process while it is restored.
const (
	scratchSize  = 64 << 10
	scratchIov   = 0        // up to 1024 iovecs
	scratchArg   = 16 << 10 // strings and structs for one call
	scratchArg2  = 24 << 10 // a second argument (auxv)
	scratchArgSz = 8 << 10
	scratchProg  = 32 << 10 // a seccomp program, up to 4096 instructions
	maxIov       = 1024
)

// preflight checks everything that can be checked before a process is created, and opens
// the files the processes will share.
func (r *restorer) preflight() error {
	var problems []string
	for _, pe := range r.c.Tree.Processes {
		if r.newPidns() {
			break // its pids are those of a new namespace: all free
		}
		for _, tid := range pe.Threads {
			if _, err := os.Stat(procfs.Path(int(tid), "")); err == nil {
				comm, _ := procfs.ReadFile(int(tid), "comm")
				problems = append(problems, fmt.Sprintf("pid %d is in use by %q", tid, strings.TrimSpace(string(comm))))
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("restore: %s (end those processes, restore elsewhere, or restore into a pid namespace of its own with --new-pidns): %w", strings.Join(problems, "; "), ErrPidInUse)
	}
	for _, pe := range r.c.Tree.Processes {
		p := r.c.Procs[pe.Pid]
		if pe.Zombie {
			continue
		}
		for _, v := range p.Vmas {
			if v.Kind != imagepb.VMAKind_VMA_KIND_FILE_PRIVATE && v.Kind != imagepb.VMAKind_VMA_KIND_FILE_SHARED || v.SavedFileId != 0 {
				continue
			}
			if st, err := linux.StatPath(v.Path); err != nil {
				problems = append(problems, fmt.Sprintf("pid %d maps %s: %v", pe.Pid, v.Path, errors.Unwrap(err)))
			} else if st.Mode&linux.SIFMT != linux.SIFREG {
				problems = append(problems, fmt.Sprintf("pid %d maps %s: not a regular file", pe.Pid, v.Path))
			}
		}
		if _, err := linux.StatPath(p.Mm.Exe); err != nil && p.Mm.ExeSavedFileId == 0 {
			problems = append(problems, fmt.Sprintf("pid %d runs %s: %v", pe.Pid, p.Mm.Exe, errors.Unwrap(err)))
		}
	}
	// A binary or library of another version would be mapped at the old offsets: refuse it.
	for _, mf := range r.c.Tree.MappedFiles {
		checkMappedFile(mf, func(what, hint, format string, args ...any) {
			problems = append(problems, what+": "+fmt.Sprintf(format, args...))
		})
	}
	// What else the machine must have: the working directories, the ports.
	environmentProblems(r.c, func(what, hint, format string, args ...any) {
		problems = append(problems, what+": "+fmt.Sprintf(format, args...))
	})
	if len(problems) > 0 {
		return fmt.Errorf("restore: %s: %w", strings.Join(uniq(problems), "; "), ErrIncompatible)
	}
	if len(r.c.Tree.Plugins) > 0 {
		host, err := pluginhost.Start(r.ctx, r.c.Tree.Plugins, PluginDirs(r.opts.PluginDirs), "restore", r.opts.PluginTimeout, &restoreServices{r: r, memory: memory{host: r.hostPid}})
		if errors.Is(err, pluginhost.ErrNotFound) {
			return fmt.Errorf("restore: the image needs plugin %v: %w (%w)", r.c.Tree.Plugins, ErrIncompatible, err)
		}
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		r.host = host
		if err := r.host.Devices(r.ctx, pluginhost.RestoreInit, r.pids()); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	return nil
}

// openAll makes what the processes will share: saved files, System V segments, open files and
// sockets (in the tree's namespaces: it runs on the tracer thread), the pages to read.
func (r *restorer) openAll() error {
	if err := r.makeRemovedDirs(); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := r.openSavedFiles(); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := r.makeSysvShm(); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := r.openFiles(); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	r.pages, r.decoded = map[string]int{}, map[string]pageReader{}
	for level, ck := range append([]*image.Checkpoint{r.c}, r.parents...) {
		for _, e := range ck.Index.Files {
			if strings.HasPrefix(e.Name, "pages-") || (level == 0 && strings.HasPrefix(e.Name, "shmem-")) {
				key := e.Name // pageSources' keys: names here, paths in the parents
				if level > 0 {
					key = ck.Path(e.Name)
				}
				if r.lazy != nil && r.lazy.remote != nil && strings.HasPrefix(e.Name, "pages-") {
					r.decoded[key] = remotePages{r.lazy.remote, e.Name}
					continue
				}
				if e.Compression != imagepb.Compression_COMPRESSION_NONE {
					dr, err := ck.OpenData(e.Name)
					if err != nil {
						return fmt.Errorf("restore: %w", err)
					}
					r.decoded[key] = dr
					continue
				}
				fd, err := linux.Open(ck.Path(e.Name), linux.ORdonly|linux.OCloexec, 0)
				if err != nil {
					return fmt.Errorf("restore: %w", err)
				}
				r.pages[key] = fd
			}
		}
	}
	return nil
}

func uniq(s []string) []string {
	sort.Strings(s)
	out := s[:0]
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}

func (r *restorer) closeFiles() {
	for _, fd := range r.files {
		linux.Close(fd)
	}
	for _, fd := range r.extra {
		linux.Close(fd)
	}
	for _, fd := range r.pages {
		linux.Close(fd)
	}
	for _, fd := range r.saved {
		linux.Close(fd)
	}
	for _, dr := range r.decoded {
		dr.Close()
	}
	r.decoded = nil
	for _, fd := range r.orphans {
		linux.Close(fd)
	}
	r.orphans = nil
	r.files, r.extra, r.pages, r.saved = map[uint32]int{}, nil, map[string]int{}, nil
}

func (r *restorer) run(ctx context.Context) error {
	t0 := time.Now()
	// Parents before children: the order of the tree file is already so.
	children := map[int32][]int32{}
	isRoot := map[int32]bool{}
	for _, root := range r.c.Tree.Roots {
		isRoot[root] = true
	}
	for _, pe := range r.c.Tree.Processes {
		r.procs[pe.Pid] = &procRestore{img: r.c.Procs[pe.Pid], entry: pe, pidfd: stubPidfd, lazyUfd: -1}
		if !isRoot[pe.Pid] {
			children[pe.Ppid] = append(children[pe.Ppid], pe.Pid)
		}
	}
	for _, root := range r.c.Tree.Roots {
		if err := r.thread.Do(func() error { return r.createTree(root, children) }); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("restore: %w", ErrInterrupted)
		}
	}
	if err := r.thread.Do(r.fixGroups); err != nil {
		return err
	}
	if err := r.thread.Do(r.setForegroundGroups); err != nil {
		return err
	}
	if err := r.openPidfds(); err != nil {
		return err
	}
	if err := r.openProcFiles(); err != nil {
		return err
	}
	r.async = r.asyncHolders()
	r.stats.Create = time.Since(t0)
	t1 := time.Now()
	// Processes are restored concurrently: each step on the tracer thread is one Do, and the
	// thread is let go around the plugins' RestoreVMA calls, so that a plugin's call waiting
	// for another process's makes progress and its calls back to the host get the thread.
	errs := make(chan error, len(r.order))
	for _, pid := range r.order {
		p := r.procs[pid]
		go func() {
			if err := r.thread.Do(func() error { return r.restoreAddressSpace(p) }); err != nil {
				errs <- fmt.Errorf("restore pid %d: %w", pid, err)
				return
			}
			if err := r.restorePluginFiles(pid); err != nil {
				errs <- err
				return
			}
			if err := r.restoreClaimedVMAs(p); err != nil {
				errs <- err
				return
			}
			if err := r.thread.Do(func() error { return r.installFds(p) }); err != nil {
				errs <- fmt.Errorf("restore pid %d: %w", pid, err)
				return
			}
			if err := r.thread.Do(func() error { return r.placeLazyCopy(p) }); err != nil {
				errs <- fmt.Errorf("restore pid %d: %w", pid, err)
				return
			}
			if err := r.thread.Do(func() error { return r.restoreState(p) }); err != nil {
				errs <- fmt.Errorf("restore pid %d: %w", pid, err)
				return
			}
			errs <- nil
		}()
	}
	var first error
	for range r.order {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return first
	}
	if ctx.Err() != nil {
		return fmt.Errorf("restore: %w", ErrInterrupted)
	}
	r.stats.Memory = time.Since(t1)
	if err := r.setFileOwners(); err != nil {
		return err
	}
	if err := r.removeRemovedDirs(); err != nil {
		return err
	}
	// Every process is in place: now let them all go.
	if err := r.host.Devices(ctx, pluginhost.ResumeDevicesLate, r.pids()); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if !r.opts.NoCgroups {
		if err := r.joinCgroups(); err != nil {
			return err
		}
	}
	// The restored sockets are out of repair mode: let the peers' packets reach them.
	if r.c.Tree.NetLock != "" {
		if err := netlock.Unlock("", r.c.Tree.NetLock); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	if err := r.closeHalves(); err != nil {
		return err
	}
	if err := r.acts.run(ctx, "post-restore", int(r.c.Tree.Roots[0])); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := r.acts.run(ctx, "pre-resume", int(r.c.Tree.Roots[0])); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := r.thread.Do(r.releaseAll); err != nil {
		return err
	}
	if r.c.Tree.ShellJob && r.c.Tree.Foreground {
		r.takeForeground()
	}
	return nil
}

// restoreOptions are the ptrace options of every restored thread; until the restore is
// complete they also have PTRACE_O_EXITKILL, so that a gocr killed half-way leaves nothing.
const restoreOptions = linux.OptTraceSysGood | linux.OptTraceFork | linux.OptTraceClone | linux.OptSuspendSeccomp

// createTree makes the root's process from a stub and then each descendant from its parent,
// all with their old PIDs, by clone3 with set_tid run inside the parent.
func (r *restorer) createTree(root int32, children map[int32][]int32) error {
	stub := r.stub // started already when the tree has network or IPC namespaces of its own
	if stub == nil {
		var err error
		if stub, err = r.startStub(root); err != nil {
			return err
		}
	}
	r.stub = nil
	p := r.procs[root]
	how := asSibling
	if r.initMode() {
		how = fromInit
	}
	child, err := r.cloneFrom(stub, p, how)
	if r.initMode() {
		r.init, r.initT = stub.t.Pid, stub
	} else {
		killStub(stub.t.Pid)
	}
	if err != nil {
		return err
	}
	p.t, p.scratch = child, stub.scratch
	if err := r.setHostname(p); err != nil {
		return err
	}
	r.order = append(r.order, root)
	if err := r.joinSession(p); err != nil {
		return err
	}
	queue := []int32{root}
	for len(queue) > 0 {
		parent := r.procs[queue[0]]
		queue = queue[1:]
		for _, pid := range children[parent.entry.Pid] {
			p := r.procs[pid]
			t, err := r.cloneFrom(parent, p, asChild)
			if err != nil {
				return err
			}
			p.t, p.scratch = t, parent.scratch
			if p.entry.Zombie {
				if err := r.makeZombie(parent, p); err != nil {
					return err
				}
				continue
			}
			r.order = append(r.order, pid)
			if err := r.joinSession(p); err != nil {
				return err
			}
			queue = append(queue, pid)
		}
	}
	return nil
}

// makeZombie lets p, just made from its parent, die as it had (exit code or signal) without
// being reaped: a zombie of its parent again. The parent's SIGCHLD of this death is taken
// back (it had one when the child first died); its own pending signals come later.
func (r *restorer) makeZombie(parent, p *procRestore) error {
	pid := p.entry.Pid
	ws := p.entry.ExitStatus
	if p.entry.Pgid == pid {
		if _, err := r.call(p, "setpgid", linux.SysSetpgid, 0, 0); err != nil {
			return fmt.Errorf("restore zombie %d: %w", pid, err)
		}
	}
	if sig := int(ws & 0x7f); sig != 0 {
		// Killed by a signal: its default action, no core file, and the signal given
		// with the detach (an injected kill would stop in ptrace first).
		zero := make([]byte, 32)
		a, err := p.arg(scratchArg, zero)
		if err != nil {
			return err
		}
		if _, err := r.call(p, "default action", linux.SysRtSigaction, uint64(sig), a, 0, 8); err != nil {
			return fmt.Errorf("restore zombie %d: %w", pid, err)
		}
		if _, err := r.call(p, "no core file", linux.SysPrlimit64, 0, linux.RlimitCore, a, 0); err != nil {
			return fmt.Errorf("restore zombie %d: %w", pid, err)
		}
		if err := linux.SetSigMask(p.host, 0); err != nil {
			return fmt.Errorf("restore zombie %d: %w", pid, err)
		}
		if err := linux.Detach(p.host, sig); err != nil {
			return fmt.Errorf("restore zombie %d: %w", pid, err)
		}
	} else {
		_, err := p.t.Syscall(linux.SysExitGroup, uint64(ws>>8&0xff))
		if !errors.Is(err, tracer.ErrExited) {
			return fmt.Errorf("restore zombie %d: exit: %v", pid, err)
		}
	}
	p.t = nil
	// Wait until it is dead (a zombie), then take back the SIGCHLD its death sent.
	for i := 0; ; i++ {
		if st, err := procfs.ReadStat(p.host); err == nil && st.State == 'Z' {
			break
		}
		if i > 2000 {
			return fmt.Errorf("restore zombie %d: it does not die", pid)
		}
		time.Sleep(time.Millisecond)
	}
	set, err := parent.arg(scratchArg, le64bytes(1<<(linux.SIGCHLD-1)))
	if err != nil {
		return err
	}
	ts, err := parent.arg(scratchArg+64, make([]byte, 16))
	if err != nil {
		return err
	}
	if _, err := r.call(parent, "take back SIGCHLD", linux.SysRtSigtimedwait, set, 0, ts, 8); err != nil && !errors.Is(err, linux.EAGAIN) {
		return fmt.Errorf("restore zombie %d: %w", pid, err)
	}
	return nil
}

// pids lists the processes of the image, by their pids in it (as plugins know them).
func (r *restorer) pids() []int {
	var out []int
	for _, pe := range r.c.Tree.Processes {
		out = append(out, int(pe.Pid))
	}
	return out
}

// startStub starts gocr itself stopped at its first instruction, traced from this thread,
// checks that this CPU can take the image's registers, and maps the scratch area at an
// address free in the stub and in every process of the tree.
func (r *restorer) startStub(root int32) (*procRestore, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("restore: find gocr binary for the stub: %w", err)
	}
	argv, attr := []string{StubName}, &syscall.SysProcAttr{Ptrace: true}
	if r.initMode() {
		// The stub is the new pid namespace's init, and stays: the root is its child.
		argv, attr.Cloneflags = []string{InitName, strconv.Itoa(int(root))}, linux.CloneNewPID
	}
	if ns := r.c.Tree.Namespaces; ns != nil {
		if ns.Net {
			attr.Cloneflags |= linux.CloneNewNet
		}
		if ns.Ipc {
			attr.Cloneflags |= linux.CloneNewIPC
		}
	}
	pidfd, err := linux.PidfdOpenFlags(os.Getpid(), 0)
	if err != nil {
		return nil, fmt.Errorf("restore: pidfd of gocr: %w", err)
	}
	pf := os.NewFile(uintptr(pidfd), "gocr pidfd")
	files := []*os.File{nil, nil, nil, pf}
	if r.initMode() {
		rd, wr, err := os.Pipe()
		if err != nil {
			pf.Close()
			return nil, fmt.Errorf("restore: start stub: %w", err)
		}
		r.initReady = rd
		defer wr.Close()
		files = append(files, wr) // the clones close it with the stub's other fds
	}
	proc, err := os.StartProcess(exe, argv, &os.ProcAttr{Sys: attr, Files: files})
	pf.Close()
	if err != nil {
		return nil, fmt.Errorf("restore: start stub: %w", err)
	}
	pid := proc.Pid
	proc.Release()
	if err := tracer.WaitStopped(pid); err != nil {
		return nil, fmt.Errorf("restore: start stub: %w", err)
	}
	fail := func(err error) (*procRestore, error) {
		killStub(pid)
		return nil, err
	}
	if err := linux.SetOptions(pid, restoreOptions|linux.OptExitKill); err != nil {
		return fail(fmt.Errorf("restore: stub: %w", err))
	}
	t, err := tracer.Adopt(pid)
	if err != nil {
		return fail(fmt.Errorf("restore: stub: %w", err))
	}
	if err := linux.SetAffinity(pid, linux.OneCPU(r.cpu)); err != nil {
		return fail(fmt.Errorf("restore: stub: %w", err))
	}
	xs, err := linux.GetXState(pid)
	if err != nil {
		return fail(fmt.Errorf("restore: stub: %w", err))
	}
	cpu := r.c.Tree.Cpu
	if uint32(len(xs)) != cpu.XstateSize || linux.XStateFeatures(xs) != cpu.Xfeatures {
		return fail(fmt.Errorf("restore: the image was taken on a CPU with XSTATE of %d bytes (features %#x), this one has %d bytes (features %#x): %w",
			cpu.XstateSize, cpu.Xfeatures, len(xs), linux.XStateFeatures(xs), ErrIncompatible))
	}
	maps, err := procfs.ReadSmaps(pid)
	if err != nil {
		return fail(fmt.Errorf("restore: stub: %w", err))
	}
	var busy [][2]uint64
	for _, m := range maps {
		busy = append(busy, [2]uint64{m.Start, m.End})
		if m.Path == "[vdso]" {
			if err := t.FindSyscallInsn(m.Start, m.End); err != nil {
				return fail(fmt.Errorf("restore: stub: %w", err))
			}
		}
	}
	for _, p := range r.c.Procs {
		for _, v := range p.Vmas {
			busy = append(busy, [2]uint64{v.Start, v.End})
		}
	}
	addr := freeArea(busy, scratchSize)
	got, err := t.Syscall(linux.SysMmap, addr, scratchSize, linux.ProtRead|linux.ProtWrite,
		linux.MapPrivate|linux.MapAnonymous|linux.MapFixedNoreplace, ^uint64(0), 0)
	if err != nil {
		return fail(fmt.Errorf("restore: stub: map scratch area: %w", err))
	}
	r.stats.Syscalls++
	if got != addr {
		return fail(fmt.Errorf("restore: stub: scratch area mapped at %#x, not at %#x", got, addr))
	}
	return &procRestore{t: t, scratch: got, entry: &imagepb.ProcessEntry{Pid: int32(pid)}}, nil
}

// freeArea finds size bytes, with a guard page each side, free of every busy range, above 4 GiB.
func freeArea(busy [][2]uint64, size uint64) uint64 {
	sort.Slice(busy, func(i, j int) bool { return busy[i][0] < busy[j][0] })
	addr := uint64(1 << 32)
	for _, b := range busy {
		if b[1]+linux.PageSize <= addr {
			continue
		}
		if b[0] >= addr+size+linux.PageSize {
			break
		}
		addr = b[1] + linux.PageSize
	}
	return addr
}

func killStub(pid int) {
	linux.Kill(pid, linux.SIGKILL)
	for {
		_, ws, err := linux.Wait4(pid, 0)
		if err != nil || ws.Exited() || ws.Signaled() {
			return
		}
	}
}

// cloneArgs is struct clone_args (linux/sched.h) up to CLONE_ARGS_SIZE_VER2, 88 bytes.
type cloneArgs struct {
	Flags, Pidfd, ChildTid, ParentTid, ExitSignal, Stack, StackSize, TLS, SetTid, SetTidSize, Cgroup uint64
}

const cloneParent = 0x8000 // CLONE_PARENT

// How cloneFrom makes a process: as the sibling of the stub it runs in (CLONE_PARENT: the
// stub's child would die with it), as the child of the process it runs in, or as the root,
// child of gocr's init of a new pid namespace.
type cloneHow int

const (
	asSibling cloneHow = iota
	asChild
	fromInit
)

// cloneFrom runs clone3 inside parent to make p's process with its old PID and returns it,
// stopped and traced. The root of a tree with namespaces of its own gets them new.
func (r *restorer) cloneFrom(parent, p *procRestore, how cloneHow) (*tracer.Tracee, error) {
	pid := p.entry.Pid
	setTid := parent.scratch + scratchArg + 128
	args := cloneArgs{ExitSignal: uint64(linux.SIGCHLD), SetTid: setTid, SetTidSize: 1}
	want := pid // what clone3 returns: the pid in the parent's namespace
	if how == asSibling {
		args.Flags = cloneParent
		args.ExitSignal = 0
		if ns := r.c.Tree.Namespaces; ns != nil {
			if ns.Pid {
				args.Flags |= linux.CloneNewPID
				want = 0 // its pid as the stub sees it, which is any
			}
			if ns.Uts {
				args.Flags |= linux.CloneNewUTS
			}
		}
	}
	if how == fromInit && r.c.Tree.Namespaces != nil && r.c.Tree.Namespaces.Uts {
		args.Flags |= linux.CloneNewUTS
	}
	if err := parent.t.WriteMem(parent.scratch+scratchArg, structBytes(&args)); err != nil {
		return nil, err
	}
	if err := parent.t.WriteMem(setTid, le32bytes(uint32(pid))); err != nil {
		return nil, err
	}
	parent.t.NewChildren = nil
	got, err := parent.t.Syscall(linux.SysClone3, parent.scratch+scratchArg, uint64(unsafeSizeofCloneArgs))
	r.stats.Syscalls++
	if errors.Is(err, linux.EEXIST) {
		return nil, fmt.Errorf("restore pid %d: %w", pid, ErrPidInUse)
	}
	if errors.Is(err, linux.EPERM) {
		return nil, fmt.Errorf("restore pid %d: clone3 with set_tid needs CAP_SYS_ADMIN (run gocr as root): %w", pid, ErrPermission)
	}
	if err != nil {
		return nil, fmt.Errorf("restore pid %d: clone3 in %d: %w", pid, parent.t.Pid, err)
	}
	if want != 0 && int32(got) != want {
		return nil, fmt.Errorf("restore pid %d: clone3 made pid %d", pid, got)
	}
	if len(parent.t.NewChildren) != 1 {
		return nil, fmt.Errorf("restore pid %d: clone3 in %d reported %d new processes", pid, parent.t.Pid, len(parent.t.NewChildren))
	}
	host := parent.t.NewChildren[0]
	if err := tracer.WaitStopped(host); err != nil {
		return nil, fmt.Errorf("restore pid %d: wait for new process: %w", pid, err)
	}
	t, err := tracer.Adopt(host)
	if err != nil {
		return nil, fmt.Errorf("restore pid %d: %w", pid, err)
	}
	t.SyscallAddr = parent.t.SyscallAddr
	p.host = host
	r.setHost(pid, host)
	if err := linux.SetSigMask(host, ^uint64(0)); err != nil {
		return nil, fmt.Errorf("restore pid %d: %w", pid, err)
	}
	return t, nil
}

// joinSession makes a session or group leader lead again, before it makes children; a
// session leader whose terminal is a pty of the tree takes it again as its controlling
// terminal, so that the children it makes next have it too.
func (r *restorer) joinSession(p *procRestore) error {
	pid := p.entry.Pid
	if p.entry.Sid == pid {
		if _, err := p.t.Syscall(linux.SysSetsid); err != nil {
			return fmt.Errorf("restore pid %d: setsid: %w", pid, err)
		}
		r.stats.Syscalls++
		if path := r.ptyOf(p.entry.CttyRdev); path != "" {
			// Opening a terminal without O_NOCTTY makes it a fresh session's controlling one.
			a, err := p.arg(scratchArg, cstring(path))
			if err != nil {
				return err
			}
			fd, err := r.call(p, "open controlling terminal "+path, linux.SysOpenat, atFdcwd, a, linux.ORdwr|linux.OCloexec)
			if err != nil {
				return fmt.Errorf("restore pid %d: %w", pid, err)
			}
			if _, err := r.call(p, "close", linux.SysClose, fd); err != nil {
				return err
			}
		}
	} else if p.entry.Pgid == pid {
		if _, err := p.t.Syscall(linux.SysSetpgid, 0, 0); err != nil {
			return fmt.Errorf("restore pid %d: setpgid: %w", pid, err)
		}
		r.stats.Syscalls++
	}
	return nil
}

// ptyOf returns the slave path of the tree's pty with device number rdev, or "".
func (r *restorer) ptyOf(rdev uint64) string {
	if rdev == 0 {
		return ""
	}
	for _, f := range r.c.Tree.Files {
		if f.Kind == imagepb.FileKind_FILE_KIND_PTY_SLAVE && f.Rdev == rdev {
			return linux.PtsPath(int(f.PtyIndex))
		}
	}
	return ""
}

// setForegroundGroups gives each restored session's pty its old foreground process group,
// from inside the session (TIOCSPGRP works only there).
func (r *restorer) setForegroundGroups() error {
	for _, pid := range r.order {
		p := r.procs[pid]
		path := r.ptyOf(p.entry.CttyRdev)
		if p.entry.Sid != pid || path == "" || p.entry.Tpgid <= 0 || r.procs[p.entry.Tpgid] == nil {
			continue
		}
		a, err := p.arg(scratchArg, cstring(path))
		if err != nil {
			return err
		}
		fd, err := r.call(p, "open terminal "+path, linux.SysOpenat, atFdcwd, a, linux.ORdwr|linux.ONoctty|linux.OCloexec)
		if err != nil {
			return fmt.Errorf("restore pid %d: %w", pid, err)
		}
		pg, err := p.arg(scratchArg, le32bytes(uint32(p.entry.Tpgid)))
		if err == nil {
			_, err = r.call(p, fmt.Sprintf("make group %d the foreground of %s", p.entry.Tpgid, path), linux.SysIoctl, fd, linux.TIOCSPGRP, pg)
		}
		if _, cerr := r.call(p, "close", linux.SysClose, fd); cerr != nil && err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("restore pid %d: %w", pid, err)
		}
	}
	return nil
}

// fixGroups moves processes into the process groups of other processes of the tree.
func (r *restorer) fixGroups() error {
	for _, pid := range r.order {
		p := r.procs[pid]
		g := p.entry.Pgid
		if g == pid || r.procs[g] == nil {
			continue // its own group (done), or a group outside the image: inherited
		}
		st, err := procfs.ReadStat(p.host)
		if err != nil {
			return fmt.Errorf("restore pid %d: %w", pid, err)
		}
		if st.PGid == r.procs[g].host {
			continue
		}
		if _, err := p.t.Syscall(linux.SysSetpgid, 0, uint64(g)); err != nil {
			return fmt.Errorf("restore pid %d: join process group %d: %w", pid, g, err)
		}
		r.stats.Syscalls++
	}
	return nil
}

// killAll kills every process created so far and reaps them all.
func (r *restorer) killAll() {
	var pids []int
	for _, pid := range r.order {
		pids = append(pids, r.procs[pid].host)
		for _, th := range r.procs[pid].threads {
			pids = append(pids, th.t.Pid) // waited for before their process
		}
	}
	for _, p := range r.procs {
		if p.t != nil && !contains(pids, p.t.Pid) {
			pids = append(pids, p.t.Pid)
		}
	}
	if r.init != 0 { // its end ends the whole namespace
		pids = append([]int{r.init}, pids...)
	}
	if r.stub != nil {
		pids = append([]int{r.stub.t.Pid}, pids...)
	}
	for _, pid := range pids {
		linux.Kill(pid, linux.SIGKILL)
	}
	// Children first: each is reaped as tracee, then as orphan of its dead parent (gocr is
	// their subreaper), until nothing is left to wait for.
	for i := len(pids) - 1; i >= 0; i-- {
		for {
			if _, _, err := linux.Wait4(pids[i], 0); err != nil {
				break
			}
		}
	}
}

// takeForeground makes the restored shell job the terminal's foreground process group, as
// it was; it is best effort: gocr may not be the terminal's session (a restore from a script).
func (r *restorer) takeForeground() {
	root := r.procs[r.c.Tree.Roots[0]]
	st, err := procfs.ReadStat(root.host)
	if err != nil {
		return
	}
	fd, err := linux.Open(r.opts.TTY, linux.ORdwr|linux.ONoctty|linux.OCloexec, 0)
	if err != nil {
		return
	}
	defer linux.Close(fd)
	linux.SetForeground(fd, st.PGid)
}

// releaseAll lets every process run (or stop), once all are in place.
func (r *restorer) releaseAll() error {
	for _, pid := range r.order {
		p := r.procs[pid]
		if err := r.finalRegs(p); err != nil {
			return fmt.Errorf("restore pid %d: %w", pid, err)
		}
	}
	for _, pid := range r.order {
		p := r.procs[pid]
		if r.opts.LeaveStopped || p.entry.Stopped {
			sig := linux.SIGSTOP
			if !r.opts.LeaveStopped {
				sig = procfs.StopSignal(p.host, int(p.entry.StopSignal)) // SIGTSTP where it can
			}
			if err := linux.Kill(p.host, sig); err != nil {
				return fmt.Errorf("restore pid %d: %w", pid, err)
			}
		}
	}
	// Every process is whole: from here a gocr that dies leaves them to run (the kernel
	// detaches them) instead of killing them, so that a restore never ends half done.
	for _, pid := range r.order {
		p := r.procs[pid]
		for _, th := range p.threads {
			if err := linux.SetOptions(th.t.Pid, restoreOptions); err != nil {
				return fmt.Errorf("restore pid %d: thread %d: %w", pid, th.t.Pid, err)
			}
		}
		if err := linux.SetOptions(p.host, restoreOptions); err != nil {
			return fmt.Errorf("restore pid %d: %w", pid, err)
		}
	}
	for _, pid := range r.order {
		p := r.procs[pid]
		for _, th := range p.threads {
			if err := linux.Detach(th.t.Pid, 0); err != nil {
				return fmt.Errorf("restore pid %d: thread %d: %w", pid, th.t.Pid, err)
			}
		}
		if err := linux.Detach(p.host, 0); err != nil {
			return fmt.Errorf("restore pid %d: %w", pid, err)
		}
		p.t = nil
	}
	return r.releaseInit()
}
