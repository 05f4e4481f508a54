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

func (p *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterPluginServer(s, &server{impl: p.impl})
	return nil
}

func (p *grpcPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, fmt.Errorf("the host side is in gocr's core")
}

type server struct {
	pb.UnimplementedPluginServer
	impl Plugin
	once sync.Once
	fds  *net.UnixConn
	err  error
	mu   sync.Mutex
}

func (s *server) Init(ctx context.Context, req *pb.InitRequest) (*pb.InitResponse, error) {
	version := uint32(APIVersion)
	if v, ok := s.impl.(Versioned); ok {
		version = v.APIVersion()
	}
	if !slices.Contains(req.ApiVersions, version) {
		return nil, fmt.Errorf("plugin %s speaks API version %d, gocr speaks %v", s.impl.Name(), version, req.ApiVersions)
	}
	c := s.impl.Claims()
	return &pb.InitResponse{Name: s.impl.Name(), ApiVersion: version, PathPrefixes: c.PathPrefixes, CharMajors: c.CharMajors}, nil
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
	s.once.Do(func() {
		c, err := net.FileConn(os.NewFile(FdSocket, "gocr-fds"))
		if err != nil {
			s.err = err
			return
		}
		s.fds = c.(*net.UnixConn)
	})
	if s.err != nil {
		return s.err
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
