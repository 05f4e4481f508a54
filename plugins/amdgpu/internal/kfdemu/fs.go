package kfdemu

import (
	"context"
	"fmt"
	"sort"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// rootNode is the mount's directory: kfd and one renderD<minor> per GPU.
type rootNode struct {
	fs.Inode
	e *Emulator
}

var _ fs.NodeOnAdder = (*rootNode)(nil)

func (r *rootNode) OnAdd(ctx context.Context) {
	kfd := r.NewPersistentInode(ctx, &devNode{e: r.e, file: r.e.kfdFile}, fs.StableAttr{Mode: fuse.S_IFREG, Ino: 2})
	r.AddChild("kfd", kfd, false)
	ids := make([]uint32, 0, len(r.e.gpus))
	for id := range r.e.gpus {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for i, id := range ids {
		g := r.e.gpus[id]
		n := r.NewPersistentInode(ctx, &devNode{e: r.e, gpu: g, file: g.file}, fs.StableAttr{Mode: fuse.S_IFREG, Ino: uint64(3 + i)})
		r.AddChild(fmt.Sprintf("renderD%d", g.Minor), n, false)
	}
}

// devNode is /dev/kfd (gpu nil) or a GPU's render node.
type devNode struct {
	fs.Inode
	e    *Emulator
	gpu  *gpuState
	file *backing
}

var (
	_ fs.NodeOpener    = (*devNode)(nil)
	_ fs.NodeGetattrer = (*devNode)(nil)
	_ fs.NodeIoctler   = (*devNode)(nil)
	_ fs.NodeFsyncer   = (*devNode)(nil)
)

// handle is one open of an emulated file, owned by the process that opened it (a forked
// child shares it but is not its owner, as with KFD).
type handle struct {
	node  *devNode
	owner int // tgid
}

var _ fs.FilePassthroughFder = (*handle)(nil)

// PassthroughFd makes the kernel map the memfd directly: the emulator sees every store at
// once and never serves a page fault (a fault served by the emulator could deadlock it).
func (h *handle) PassthroughFd() (int, bool) { return int(h.node.file.f.Fd()), true }

func (n *devNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	tgid := tgidOf(contextTid(ctx))
	if tgid <= 0 {
		return nil, 0, syscall.ESRCH
	}
	if n.gpu == nil {
		n.e.mu.Lock()
		n.e.procOf(tgid)
		n.e.mu.Unlock()
	}
	return &handle{node: n, owner: tgid}, 0, 0
}

func (n *devNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = fuse.S_IFREG | 0o666
	out.Size = fileSize
	out.Nlink = 1
	return 0
}

func (n *devNode) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno { return 0 }

func (n *devNode) Ioctl(ctx context.Context, f fs.FileHandle, cmd uint32, arg uint64, in, out []byte) (int32, syscall.Errno) {
	h, ok := f.(*handle)
	if !ok {
		return 0, syscall.EBADF
	}
	if n.gpu != nil {
		return 0, syscall.ENOTTY // render nodes take DRM ioctls, none of which are emulated
	}
	// _IOW brings only input, _IOR only output, _IOWR both: work on one buffer of the
	// struct's size. The output buffer is not zeroed: every byte of it is written.
	buf := make([]byte, max(len(in), len(out)))
	copy(buf, in)
	r, errno := n.e.ioctl(contextTid(ctx), h, cmd, arg, buf)
	copy(out, buf)
	return r, errno
}
