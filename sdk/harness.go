package sdk

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"syscall"

	pb "github.com/gocr/gocr/sdk/proto"
)

// Harness runs a plugin in the test's own process, through the same request handling and fd
// socket as gocr uses, so that a plugin is tested without starting a process or gocr.
type Harness struct {
	s    *server
	host *net.UnixConn
	next uint64
}

// NewHarness wraps p.
func NewHarness(p Plugin) (*Harness, error) {
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socketpair", err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "harness")
		defer f.Close()
		c, _ := net.FileConn(f)
		return c.(*net.UnixConn)
	}
	h := &Harness{s: &server{impl: p}, host: conn(pair[0])}
	h.s.fds = conn(pair[1])
	h.s.once.Do(func() {}) // the fd socket is set up already
	return h, nil
}

// Init runs the plugin's Init as gocr would for operation ("dump" or "restore").
func (h *Harness) Init(operation string) (Claims, error) {
	r, err := h.s.Init(context.Background(), &pb.InitRequest{Operation: operation, ApiVersions: []uint32{APIVersion}})
	if err != nil {
		return Claims{}, err
	}
	return Claims{PathPrefixes: r.PathPrefixes, CharMajors: r.CharMajors}, nil
}

func req(f File, blob []byte, token uint64) *pb.FileRequest {
	return &pb.FileRequest{Pid: int32(f.Pid), Fd: int32(f.Fd), Path: f.Path, Flags: f.Flags, Pos: f.Pos, Rdev: f.Rdev, Blob: blob, Token: token}
}

// DumpFile runs the plugin's DumpFile.
func (h *Harness) DumpFile(f File) ([]byte, error) {
	r, err := h.s.DumpFile(context.Background(), req(f, nil, 0))
	if err != nil {
		return nil, err
	}
	return r.Blob, nil
}

// RestoreFile runs the plugin's RestoreFile and returns the fd it sent, as gocr gets it.
func (h *Harness) RestoreFile(f File, blob []byte) (*os.File, error) {
	h.next++
	if _, err := h.s.RestoreFile(context.Background(), req(f, blob, h.next)); err != nil {
		return nil, err
	}
	buf, oob := make([]byte, 8), make([]byte, syscall.CmsgSpace(4))
	n, oobn, _, _, err := h.host.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 || n != 8 || binary.LittleEndian.Uint64(buf) != h.next {
		return nil, fmt.Errorf("the plugin sent no fd, or another one")
	}
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("the plugin sent no fd")
	}
	return os.NewFile(uintptr(fds[0]), f.Path), nil
}

// Fini runs the plugin's Fini.
func (h *Harness) Fini(ok bool) {
	h.s.Fini(context.Background(), &pb.FiniRequest{Ok: ok})
}

// Close releases the harness.
func (h *Harness) Close() {
	h.host.Close()
	h.s.fds.Close()
}
