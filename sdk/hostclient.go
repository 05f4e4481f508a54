package sdk

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	pb "github.com/gocr/gocr/sdk/proto"
)

// hostClient is the plugin side of the Host service: calls back into gocr.
type hostClient struct {
	c     pb.HostClient
	s     *server
	mu    sync.Mutex // one GetFd at a time on the fd socket
	token uint64
}

func (h *hostClient) ReadMemory(ctx context.Context, pid int, addr uint64, n int) ([]byte, error) {
	r, err := h.c.ReadMemory(ctx, &pb.MemoryRequest{Pid: int32(pid), Addr: addr, Len: uint64(n)})
	if err != nil {
		return nil, err
	}
	return r.Data, nil
}

func (h *hostClient) WriteMemory(ctx context.Context, pid int, addr uint64, b []byte) error {
	_, err := h.c.WriteMemory(ctx, &pb.MemoryRequest{Pid: int32(pid), Addr: addr, Data: b})
	return err
}

func (h *hostClient) Syscall(ctx context.Context, pid int, nr int64, args ...uint64) (uint64, error) {
	r, err := h.c.Syscall(ctx, &pb.SyscallRequest{Pid: int32(pid), Nr: nr, Args: args})
	if err != nil {
		return 0, hostError(err)
	}
	return r.Ret, nil
}

func (h *hostClient) TracerIoctl(ctx context.Context, pid, fd int, request uint64, arg []byte, bufs ...*IoctlBuffer) (int64, []byte, error) {
	req := &pb.IoctlRequest{Pid: int32(pid), Fd: int32(fd), Request: request, Arg: arg}
	for _, b := range bufs {
		req.Buffers = append(req.Buffers, &pb.IoctlBuffer{At: uint32(b.At), Data: b.Data})
	}
	r, err := h.c.TracerIoctl(ctx, req)
	if err != nil {
		return 0, nil, hostError(err)
	}
	if len(r.Buffers) != len(bufs) {
		return 0, nil, fmt.Errorf("ioctl %#x: gocr gave back %d buffers of %d", request, len(r.Buffers), len(bufs))
	}
	for i, b := range bufs {
		b.Data = r.Buffers[i]
	}
	return r.Ret, r.Arg, nil
}

func (h *hostClient) GetFd(ctx context.Context, pid, fd int) (*os.File, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.s.fdSocket(); err != nil {
		return nil, err
	}
	h.token++
	if _, err := h.c.GetFd(ctx, &pb.FdRequest{Pid: int32(pid), Fd: int32(fd), Token: h.token}); err != nil {
		return nil, err
	}
	return h.receiveFd(fmt.Sprintf("pid %d fd %d", pid, fd))
}

// hostError turns gocr's error status into an error that wraps the kernel's errno, when the
// kernel failed the call (errors.Is(err, syscall.ENODEV) works).
func hostError(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	for _, d := range st.Details() {
		if e, ok := d.(*pb.Errno); ok {
			return &errnoError{msg: st.Message(), errno: syscall.Errno(e.Errno)}
		}
	}
	return errors.New(st.Message())
}

type errnoError struct {
	msg   string
	errno syscall.Errno
}

func (e *errnoError) Error() string { return e.msg }
func (e *errnoError) Unwrap() error { return e.errno }

// receiveFd takes the fd gocr sent for the current token; what names it. h.mu is held.
func (h *hostClient) receiveFd(what string) (*os.File, error) {
	buf, oob := make([]byte, 8), make([]byte, syscall.CmsgSpace(4))
	n, oobn, _, _, err := h.s.fds.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 || n != 8 || binary.LittleEndian.Uint64(buf) != h.token {
		return nil, fmt.Errorf("gocr sent no fd for %s", what)
	}
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("gocr sent no fd for %s", what)
	}
	return os.NewFile(uintptr(fds[0]), what), nil
}

func (h *hostClient) blobFile(ctx context.Context, name string, call func(context.Context, *pb.BlobFileRequest, ...grpc.CallOption) (*pb.Empty, error)) (*os.File, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.s.fdSocket(); err != nil {
		return nil, err
	}
	h.token++
	if _, err := call(ctx, &pb.BlobFileRequest{Name: name, Token: h.token}); err != nil {
		return nil, err
	}
	return h.receiveFd("blob " + name)
}

func (h *hostClient) CreateBlobFile(ctx context.Context, name string) (*os.File, error) {
	return h.blobFile(ctx, name, h.c.CreateBlobFile)
}

func (h *hostClient) OpenBlobFile(ctx context.Context, name string) (*os.File, error) {
	return h.blobFile(ctx, name, h.c.OpenBlobFile)
}

func (h *hostClient) PutBlob(ctx context.Context, name string, data []byte) error {
	_, err := h.c.PutBlob(ctx, &pb.BlobRequest{Name: name, Data: data})
	return err
}

func (h *hostClient) GetBlob(ctx context.Context, name string) ([]byte, error) {
	r, err := h.c.GetBlob(ctx, &pb.BlobRequest{Name: name})
	if err != nil {
		return nil, err
	}
	return r.Data, nil
}
