package sdk

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pb "github.com/gocr/gocr/sdk/proto"
)

// This file is the plugin side of the wire: gRPC requests become calls of Plugin.

// FdSocket is the fd at which a plugin process finds the unix socket that carries fds to
// the host (the host passes it as the first extra file).
const FdSocket = 3

type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl Plugin
}

func (p *grpcPlugin) GRPCServer(b *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterPluginServer(s, &server{impl: p.impl, broker: b})
	return nil
}

func (p *grpcPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, fmt.Errorf("the host side is in gocr's core")
}

type server struct {
	pb.UnimplementedPluginServer
	impl   Plugin
	broker *plugin.GRPCBroker
	once   sync.Once
	fds    *net.UnixConn
	err    error
	mu     sync.Mutex
}

// fdSocket opens the fd socket gocr passed as fd 3, once.
func (s *server) fdSocket() error {
	s.once.Do(func() {
		c, err := net.FileConn(os.NewFile(FdSocket, "gocr-fds"))
		if err != nil {
			s.err = err
			return
		}
		s.fds = c.(*net.UnixConn)
	})
	return s.err
}

func pids(r *pb.PidsRequest) []int {
	out := make([]int, len(r.Pids))
	for i, p := range r.Pids {
		out[i] = int(p)
	}
	return out
}

func vma(r *pb.VMARequest) VMA {
	return VMA{Pid: int(r.Pid), Start: r.Start, End: r.End, Prot: r.Prot, Shared: r.Shared, Pgoff: r.Pgoff, Path: r.Path, Rdev: r.Rdev}
}

func (s *server) DumpVMA(ctx context.Context, r *pb.VMARequest) (*pb.DumpFileResponse, error) {
	d, ok := s.impl.(VMADumper)
	if !ok {
		return nil, fmt.Errorf("plugin %s claims mappings but has no DumpVMA", s.impl.Name())
	}
	blob, err := d.DumpVMA(ctx, vma(r))
	if err != nil {
		return nil, err
	}
	return &pb.DumpFileResponse{Blob: blob}, nil
}

func (s *server) RestoreVMA(ctx context.Context, r *pb.VMARequest) (*pb.Empty, error) {
	d, ok := s.impl.(VMARestorer)
	if !ok {
		return nil, fmt.Errorf("plugin %s claims mappings but has no RestoreVMA", s.impl.Name())
	}
	return &pb.Empty{}, d.RestoreVMA(ctx, vma(r), r.Blob)
}

func (s *server) PauseDevices(ctx context.Context, r *pb.PidsRequest) (*pb.Empty, error) {
	if h, ok := s.impl.(Pauser); ok {
		return &pb.Empty{}, h.PauseDevices(ctx, pids(r))
	}
	return &pb.Empty{}, nil
}

func (s *server) CheckpointDevices(ctx context.Context, r *pb.PidsRequest) (*pb.Empty, error) {
	if h, ok := s.impl.(Checkpointer); ok {
		return &pb.Empty{}, h.CheckpointDevices(ctx, pids(r))
	}
	return &pb.Empty{}, nil
}

func (s *server) DumpDevicesLate(ctx context.Context, r *pb.PidsRequest) (*pb.Empty, error) {
	if h, ok := s.impl.(LateDumper); ok {
		return &pb.Empty{}, h.DumpDevicesLate(ctx, pids(r))
	}
	return &pb.Empty{}, nil
}

func (s *server) RestoreInit(ctx context.Context, r *pb.PidsRequest) (*pb.Empty, error) {
	if h, ok := s.impl.(RestoreIniter); ok {
		return &pb.Empty{}, h.RestoreInit(ctx, pids(r))
	}
	return &pb.Empty{}, nil
}

func (s *server) ResumeDevicesLate(ctx context.Context, r *pb.PidsRequest) (*pb.Empty, error) {
	if h, ok := s.impl.(Resumer); ok {
		return &pb.Empty{}, h.ResumeDevicesLate(ctx, pids(r))
	}
	return &pb.Empty{}, nil
}

func (s *server) Check(ctx context.Context, r *pb.PidsRequest) (*pb.CheckResponse, error) {
	if h, ok := s.impl.(Checker); ok {
		problems, err := h.Check(ctx, pids(r))
		return &pb.CheckResponse{Problems: problems}, err
	}
	return &pb.CheckResponse{}, nil
}

func (s *server) Init(ctx context.Context, req *pb.InitRequest) (*pb.InitResponse, error) {
	version := uint32(APIVersion)
	if v, ok := s.impl.(Versioned); ok {
		version = v.APIVersion()
	}
	if !slices.Contains(req.ApiVersions, version) {
		return nil, fmt.Errorf("plugin %s speaks API version %d, gocr speaks %v: %w", s.impl.Name(), version, req.ApiVersions, ErrIncompatible)
	}
	if u, ok := s.impl.(HostUser); ok && s.broker != nil && req.HostBrokerId != 0 {
		conn, err := s.broker.Dial(req.HostBrokerId)
		if err != nil {
			return nil, fmt.Errorf("plugin %s: reach gocr's host services: %w", s.impl.Name(), err)
		}
		u.UseHost(&hostClient{c: pb.NewHostClient(conn), s: s})
	}
	c := s.impl.Claims()
	return &pb.InitResponse{Name: s.impl.Name(), ApiVersion: version, PathPrefixes: c.PathPrefixes, CharMajors: c.CharMajors,
		MappingPrefixes: c.MappingPrefixes}, nil
}

func file(r *pb.FileRequest) File {
	return File{Pid: int(r.Pid), Fd: int(r.Fd), Path: r.Path, Flags: r.Flags, Pos: r.Pos, Rdev: r.Rdev}
}

func (s *server) DumpFile(ctx context.Context, r *pb.FileRequest) (*pb.DumpFileResponse, error) {
	blob, err := s.impl.DumpFile(ctx, file(r))
	if err != nil {
		return nil, err
	}
	return &pb.DumpFileResponse{Blob: blob}, nil
}

func (s *server) RestoreFile(ctx context.Context, r *pb.FileRequest) (*pb.RestoreFileResponse, error) {
	f, err := s.impl.RestoreFile(ctx, file(r), r.Blob)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := s.sendFd(r.Token, int(f.Fd())); err != nil {
		return nil, fmt.Errorf("send fd %d of pid %d to gocr: %w", r.Fd, r.Pid, err)
	}
	return &pb.RestoreFileResponse{}, nil
}

// sendFd sends fd with its token over the fd socket (SCM_RIGHTS): fds cannot cross gRPC.
func (s *server) sendFd(token uint64, fd int) error {
	if err := s.fdSocket(); err != nil {
		return err
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], token)
	s.mu.Lock()
	defer s.mu.Unlock()
	_, _, err := s.fds.WriteMsgUnix(b[:], syscall.UnixRights(fd), nil)
	return err
}

func (s *server) Fini(ctx context.Context, r *pb.FiniRequest) (*pb.Empty, error) {
	if f, ok := s.impl.(Finisher); ok {
		f.Fini(r.Ok)
	}
	return &pb.Empty{}, nil
}
