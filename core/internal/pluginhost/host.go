// Package pluginhost starts gocr's plugins (hashicorp/go-plugin, gRPC only), agrees an API
// version with each, routes claimed files to them and carries their calls, with a timeout
// per call. It is the host side of the wire; sdk is the plugin side.
package pluginhost

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gocr/gocr/sdk"
	pb "github.com/gocr/gocr/sdk/proto"
)

// APIVersions are the plugin API versions this host speaks.
var APIVersions = []uint32{sdk.APIVersion}

// ErrNotFound means a plugin binary is not where gocr looks.
var ErrNotFound = errors.New("plugin not found")

// Kinds of plugin failures (sdk.ErrUnsupported, sdk.ErrIncompatible on the plugin's side):
// core gives them as its own ErrUnsupported and ErrIncompatible (core/errors.go).
var (
	ErrUnsupported  = errors.New("not supported")
	ErrIncompatible = errors.New("image does not fit this machine")
)

// DefaultTimeout bounds each call to a plugin: a hung plugin is an error, not a hung gocr.
const DefaultTimeout = 30 * time.Second

// Host holds the plugins of one operation.
type Host struct {
	plugins []*Plugin
	timeout time.Duration
	svc     Services
}

// Plugin is one running plugin process.
type Plugin struct {
	Name   string
	claims *pb.InitResponse
	client *plugin.Client
	rpc    pb.PluginClient
	fds    *net.UnixConn // the host end of the fd socket

	mu      sync.Mutex
	waiting map[uint64]chan int
	token   uint64
	stderr  *tail // the last of what the plugin process wrote to its stderr
}

// tail keeps the last bytes written to it: a plugin's dying words go into the error.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

const tailSize = 2048

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(append(t.buf, b...), '\n') // go-plugin writes a line a call, without its newline
	if len(t.buf) > tailSize {
		t.buf = t.buf[len(t.buf)-tailSize:]
	}
	return len(b), nil
}

// String is what the plugin wrote itself, without go-plugin's own log lines (JSON).
func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var lines []string
	for _, l := range strings.Split(string(t.buf), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, `{"@`) {
			if strings.HasPrefix(l, "panic: ") {
				return l // the rest is its stack
			}
			lines = append(lines, l)
		}
	}
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, "; ")
}

// callError is grpcError, with what a plugin that died said on its way out.
func (p *Plugin) callError(err error) error {
	e := grpcError(err)
	if status.Code(err) != codes.Unavailable && !errors.Is(err, io.EOF) {
		return e
	}
	for i := 0; i < 20 && p.stderr.String() == ""; i++ {
		time.Sleep(10 * time.Millisecond) // its stderr is read as it comes
	}
	return p.said(e)
}

// said adds what the plugin wrote to its stderr, if anything, to err.
func (p *Plugin) said(err error) error {
	if s := p.stderr.String(); s != "" {
		return fmt.Errorf("%w; it said: %s", err, s)
	}
	return err
}

// Find returns the path of plugin name: a path as given, or gocr-plugin-NAME in the first of
// dirs that has it.
func Find(name string, dirs []string) (string, error) {
	if strings.Contains(name, "/") {
		if _, err := os.Stat(name); err != nil {
			return "", fmt.Errorf("plugin %s: %w", name, ErrNotFound)
		}
		return name, nil
	}
	for _, d := range dirs {
		p := filepath.Join(d, "gocr-plugin-"+name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("plugin %s: no gocr-plugin-%s in %s: %w", name, name, strings.Join(dirs, ", "), ErrNotFound)
}

// Services are what the host does for plugins that call back (sdk.Host): the dumper or the
// restorer provides them. A nil Services refuses every call.
type Services interface {
	ReadMemory(pid int, addr uint64, n int) ([]byte, error)
	WriteMemory(pid int, addr uint64, b []byte) error
	Syscall(pid int, nr int64, args []uint64) (uint64, error)
	TracerIoctl(pid, fd int, request uint64, arg []byte, bufs []IoctlBuffer) (int64, []byte, [][]byte, error)
	// Dup returns a dup, in gocr, of the process's fd; the host sends it and closes it.
	Dup(pid, fd int) (int, error)
	PutBlob(plugin, name string, data []byte) error
	GetBlob(plugin, name string) ([]byte, error)
	// CreateBlobFile and OpenBlobFile give a blob's file of the image; the host sends it and
	// closes it.
	CreateBlobFile(plugin, name string) (*os.File, error)
	OpenBlobFile(plugin, name string) (*os.File, error)
}

// IoctlBuffer is memory an ioctl argument points to, at offset At of the argument.
type IoctlBuffer struct {
	At   int
	Data []byte
}

// maxIoctlBuffers bounds what one TracerIoctl may ask gocr to hold.
const maxIoctlBuffers = 16

// Start starts the named plugins for operation ("dump", "restore" or "check") and agrees an
// API version with each. On error, the plugins already started are stopped.
func Start(ctx context.Context, names, dirs []string, operation string, timeout time.Duration, svc Services) (*Host, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	h := &Host{timeout: timeout, svc: svc}
	for _, name := range names {
		p, err := h.start(ctx, name, dirs, operation)
		if err != nil {
			h.Close(false)
			return nil, err
		}
		h.plugins = append(h.plugins, p)
	}
	return h, nil
}

func (h *Host) start(ctx context.Context, name string, dirs []string, operation string) (*Plugin, error) {
	path, err := Find(name, dirs)
	if err != nil {
		return nil, err
	}
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socketpair", err)
	}
	ours, theirs := os.NewFile(uintptr(pair[0]), "gocr-fds"), os.NewFile(uintptr(pair[1]), "gocr-fds")
	defer theirs.Close()
	cmd := exec.Command(path)
	cmd.ExtraFiles = []*os.File{theirs} // fd 3 in the plugin: sdk.FdSocket
	stderr := &tail{}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		Plugins:          map[string]plugin.Plugin{sdk.PluginName: &grpcPlugin{}},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclog.NewNullLogger(),
		Stderr:           stderr,
		SyncStderr:       stderr, // what the plugin writes to os.Stderr once served
	})
	fail := func(err error) (*Plugin, error) {
		client.Kill()
		ours.Close()
		if s := stderr.String(); s != "" {
			err = fmt.Errorf("%w; it said: %s", err, s)
		}
		return nil, fmt.Errorf("plugin %s: %w", name, err)
	}
	rc, err := client.Client()
	if err != nil {
		return fail(err)
	}
	raw, err := rc.Dispense(sdk.PluginName)
	if err != nil {
		return fail(err)
	}
	conn, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		return fail(err)
	}
	d := raw.(dispensed)
	// A plugin given by its path is known by its name (gocr-plugin-NAME) in the image, its
	// blobs' file names and messages; a restore looks it up by that name.
	p := &Plugin{Name: strings.TrimPrefix(filepath.Base(path), "gocr-plugin-"), client: client, rpc: d.rpc, fds: conn.(*net.UnixConn), waiting: map[uint64]chan int{}, stderr: stderr}
	// The Host service, served back to the plugin through go-plugin's broker.
	broker := d.broker
	id := broker.NextId()
	go broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(opts...)
		pb.RegisterHostServer(s, &hostServer{h: h, p: p})
		return s
	})
	cctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	init, err := p.rpc.Init(cctx, &pb.InitRequest{Operation: operation, ApiVersions: APIVersions, HostBrokerId: id})
	if err != nil {
		p.fds.Close()
		return fail(fmt.Errorf("init: %w", grpcError(err)))
	}
	if init.ApiVersion != sdk.APIVersion {
		p.fds.Close()
		return fail(fmt.Errorf("speaks API version %d, gocr speaks %v: %w", init.ApiVersion, APIVersions, ErrIncompatible))
	}
	p.claims = init
	go p.receiveFds()
	return p, nil
}

// receiveFds hands each fd the plugin sends to the call waiting for its token.
func (p *Plugin) receiveFds() {
	buf, oob := make([]byte, 8), make([]byte, syscall.CmsgSpace(4))
	for {
		n, oobn, _, _, err := p.fds.ReadMsgUnix(buf, oob)
		if err != nil {
			p.mu.Lock()
			for _, ch := range p.waiting {
				close(ch)
			}
			p.waiting = nil
			p.mu.Unlock()
			return
		}
		msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 || n != 8 {
			continue
		}
		fds, err := syscall.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			continue
		}
		token := binary.LittleEndian.Uint64(buf)
		p.mu.Lock()
		ch, ok := p.waiting[token]
		p.mu.Unlock()
		if !ok {
			syscall.Close(fds[0])
			continue
		}
		ch <- fds[0]
	}
}

// ClaimMapping returns the plugin that claims a mapping of path (a device's when isChar), nil
// if none; two claims are a configuration error.
func (h *Host) ClaimMapping(path string, charMajor uint32, isChar bool) (*Plugin, error) {
	return h.claim("mapping of "+path, func(c *pb.InitResponse) bool { return claims(c.MappingPrefixes, c.CharMajors, path, charMajor, isChar) })
}

// Claim returns the plugin that claims a file, nil if none; two claims are a configuration
// error.
func (h *Host) Claim(path string, charMajor uint32, isChar bool) (*Plugin, error) {
	return h.claim(path, func(c *pb.InitResponse) bool { return claims(c.PathPrefixes, c.CharMajors, path, charMajor, isChar) })
}

// claims says whether a path or device falls under these prefixes and majors.
func claims(prefixes []string, majors []uint32, path string, charMajor uint32, isChar bool) bool {
	for _, pre := range prefixes {
		if strings.HasPrefix(path, pre) {
			return true
		}
	}
	return isChar && slices.Contains(majors, charMajor)
}

// claim returns the one plugin whose claims mine accepts; what names the object in errors.
func (h *Host) claim(what string, mine func(*pb.InitResponse) bool) (*Plugin, error) {
	if h == nil {
		return nil, nil
	}
	var found *Plugin
	for _, p := range h.plugins {
		if !mine(p.claims) {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("%s is claimed by two plugins, %s and %s: load only one of them", what, found.Name, p.Name)
		}
		found = p
	}
	return found, nil
}

// File is a claimed file as the host sends it.
type File = sdk.File

func request(f File, blob []byte, token uint64) *pb.FileRequest {
	return &pb.FileRequest{Pid: int32(f.Pid), Fd: int32(f.Fd), Path: f.Path, Flags: f.Flags, Pos: f.Pos, Rdev: f.Rdev, Blob: blob, Token: token}
}

// DumpFile calls the plugin's DumpFile hook.
func (h *Host) DumpFile(ctx context.Context, p *Plugin, f File) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	r, err := p.rpc.DumpFile(ctx, request(f, nil, 0))
	if err != nil {
		return nil, fmt.Errorf("plugin %s: dump pid %d fd %d (%s): %w", p.Name, f.Pid, f.Fd, f.Path, p.callError(err))
	}
	return r.Blob, nil
}

// RestoreFile calls the plugin's RestoreFile hook and returns the fd it made, now gocr's.
func (h *Host) RestoreFile(ctx context.Context, p *Plugin, f File, blob []byte) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	p.mu.Lock()
	if p.waiting == nil {
		p.mu.Unlock()
		return -1, fmt.Errorf("plugin %s: its fd socket is closed", p.Name)
	}
	p.token++
	token := p.token
	ch := make(chan int, 1)
	p.waiting[token] = ch
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		if p.waiting != nil {
			delete(p.waiting, token)
		}
		p.mu.Unlock()
	}()
	if _, err := p.rpc.RestoreFile(ctx, request(f, blob, token)); err != nil {
		return -1, fmt.Errorf("plugin %s: restore pid %d fd %d (%s): %w", p.Name, f.Pid, f.Fd, f.Path, p.callError(err))
	}
	select {
	case fd, ok := <-ch:
		if !ok {
			return -1, fmt.Errorf("plugin %s: restore pid %d fd %d: no fd came", p.Name, f.Pid, f.Fd)
		}
		return fd, nil
	case <-ctx.Done():
		return -1, fmt.Errorf("plugin %s: restore pid %d fd %d: no fd came: %w", p.Name, f.Pid, f.Fd, ctx.Err())
	}
}

// VMA is a claimed mapping as the host sends it.
type VMA = sdk.VMA

func vmaRequest(v VMA, blob []byte) *pb.VMARequest {
	return &pb.VMARequest{Pid: int32(v.Pid), Start: v.Start, End: v.End, Prot: v.Prot, Shared: v.Shared, Pgoff: v.Pgoff, Path: v.Path, Rdev: v.Rdev, Blob: blob}
}

// DumpVMA calls the plugin's DumpVMA hook.
func (h *Host) DumpVMA(ctx context.Context, p *Plugin, v VMA) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	r, err := p.rpc.DumpVMA(ctx, vmaRequest(v, nil))
	if err != nil {
		return nil, fmt.Errorf("plugin %s: dump pid %d mapping %#x-%#x (%s): %w", p.Name, v.Pid, v.Start, v.End, v.Path, p.callError(err))
	}
	return r.Blob, nil
}

// RestoreVMA calls the plugin's RestoreVMA hook.
func (h *Host) RestoreVMA(ctx context.Context, p *Plugin, v VMA, blob []byte) error {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	if _, err := p.rpc.RestoreVMA(ctx, vmaRequest(v, blob)); err != nil {
		return fmt.Errorf("plugin %s: restore pid %d mapping %#x-%#x (%s): %w", p.Name, v.Pid, v.Start, v.End, v.Path, p.callError(err))
	}
	return nil
}

// Device hooks, called on every plugin.
const (
	PauseDevices      = "PauseDevices"
	CheckpointDevices = "CheckpointDevices"
	DumpDevicesLate   = "DumpDevicesLate"
	RestoreInit       = "RestoreInit"
	ResumeDevicesLate = "ResumeDevicesLate"
)

// Devices calls a device hook on every plugin, with the pids it concerns.
func (h *Host) Devices(ctx context.Context, hook string, pids []int) error {
	if h == nil {
		return nil
	}
	req := &pb.PidsRequest{}
	for _, p := range pids {
		req.Pids = append(req.Pids, int32(p))
	}
	for _, p := range h.plugins {
		cctx, cancel := context.WithTimeout(ctx, h.timeout)
		var err error
		switch hook {
		case PauseDevices:
			_, err = p.rpc.PauseDevices(cctx, req)
		case CheckpointDevices:
			_, err = p.rpc.CheckpointDevices(cctx, req)
		case DumpDevicesLate:
			_, err = p.rpc.DumpDevicesLate(cctx, req)
		case RestoreInit:
			_, err = p.rpc.RestoreInit(cctx, req)
		case ResumeDevicesLate:
			_, err = p.rpc.ResumeDevicesLate(cctx, req)
		default:
			err = fmt.Errorf("unknown hook %s", hook)
		}
		cancel()
		if err != nil {
			return fmt.Errorf("plugin %s: %s: %w", p.Name, hook, p.callError(err))
		}
	}
	return nil
}

// Check asks every plugin whether a restore here would work, and returns their problems.
func (h *Host) Check(ctx context.Context, pids []int) ([]string, error) {
	if h == nil {
		return nil, nil
	}
	req := &pb.PidsRequest{}
	for _, p := range pids {
		req.Pids = append(req.Pids, int32(p))
	}
	var out []string
	for _, p := range h.plugins {
		cctx, cancel := context.WithTimeout(ctx, h.timeout)
		r, err := p.rpc.Check(cctx, req)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("plugin %s: check: %w", p.Name, p.callError(err))
		}
		for _, pr := range r.Problems {
			out = append(out, "plugin "+p.Name+": "+pr)
		}
	}
	return out, nil
}

// Close tells every plugin how the operation ended and stops its process.
func (h *Host) Close(ok bool) {
	if h == nil {
		return
	}
	for _, p := range h.plugins {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		p.rpc.Fini(ctx, &pb.FiniRequest{Ok: ok})
		cancel()
		p.client.Kill()
		p.fds.Close()
	}
	h.plugins = nil
}

// Names lists the plugins running.
func (h *Host) Names() []string {
	var out []string
	if h != nil {
		for _, p := range h.plugins {
			out = append(out, p.Name)
		}
	}
	return out
}

// grpcError turns the gRPC error of a dead or hung plugin into a plain message; a plugin's
// own error comes through as its message.
func grpcError(err error) error {
	switch status.Code(err) {
	case codes.Canceled:
		return fmt.Errorf("the call was cancelled (%v)", err)
	case codes.Unavailable:
		return fmt.Errorf("the plugin process died (%v)", err)
	case codes.DeadlineExceeded:
		return fmt.Errorf("no answer within the time limit: the plugin hangs (%v)", err)
	case codes.Unknown:
		return errors.New(status.Convert(err).Message())
	case codes.Unimplemented:
		return fmt.Errorf("%s: %w", status.Convert(err).Message(), ErrUnsupported)
	case codes.FailedPrecondition:
		return fmt.Errorf("%s: %w", status.Convert(err).Message(), ErrIncompatible)
	}
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("the plugin process died (%v)", err)
	}
	return err
}

// grpcPlugin is the host side of go-plugin's registration.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

func (grpcPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return fmt.Errorf("the plugin side is in package sdk")
}

// dispensed is what Dispense gives: the client and the broker to serve the Host service on.
type dispensed struct {
	rpc    pb.PluginClient
	broker *plugin.GRPCBroker
}

func (grpcPlugin) GRPCClient(_ context.Context, b *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return dispensed{rpc: pb.NewPluginClient(c), broker: b}, nil
}

// hostServer serves the Host service to one plugin.
type hostServer struct {
	pb.UnimplementedHostServer
	h *Host
	p *Plugin
}

func (s *hostServer) svc() (Services, error) {
	if s.h.svc == nil {
		return nil, fmt.Errorf("gocr offers no host services in this operation")
	}
	return s.h.svc, nil
}

func (s *hostServer) ReadMemory(ctx context.Context, r *pb.MemoryRequest) (*pb.MemoryResponse, error) {
	svc, err := s.svc()
	if err != nil {
		return nil, err
	}
	if r.Len > 64<<20 {
		return nil, fmt.Errorf("read of %d bytes: at most 64 MiB a call", r.Len)
	}
	b, err := svc.ReadMemory(int(r.Pid), r.Addr, int(r.Len))
	return &pb.MemoryResponse{Data: b}, err
}

func (s *hostServer) WriteMemory(ctx context.Context, r *pb.MemoryRequest) (*pb.Empty, error) {
	svc, err := s.svc()
	if err != nil {
		return nil, err
	}
	return &pb.Empty{}, svc.WriteMemory(int(r.Pid), r.Addr, r.Data)
}

func (s *hostServer) Syscall(ctx context.Context, r *pb.SyscallRequest) (*pb.SyscallResponse, error) {
	svc, err := s.svc()
	if err != nil {
		return nil, err
	}
	if len(r.Args) > 6 {
		return nil, fmt.Errorf("a syscall takes at most 6 arguments")
	}
	ret, err := svc.Syscall(int(r.Pid), r.Nr, r.Args)
	if err != nil {
		return nil, withErrno(err)
	}
	return &pb.SyscallResponse{Ret: ret}, nil
}

// withErrno carries the errno of a failed syscall or ioctl to the plugin as a status detail.
func withErrno(err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return err
	}
	st, derr := status.New(codes.Unknown, err.Error()).WithDetails(&pb.Errno{Errno: int32(errno)})
	if derr != nil {
		return err
	}
	return st.Err()
}

func (s *hostServer) TracerIoctl(ctx context.Context, r *pb.IoctlRequest) (*pb.IoctlResponse, error) {
	svc, err := s.svc()
	if err != nil {
		return nil, err
	}
	if len(r.Buffers) > maxIoctlBuffers {
		return nil, fmt.Errorf("ioctl with %d buffers: at most %d", len(r.Buffers), maxIoctlBuffers)
	}
	bufs := make([]IoctlBuffer, len(r.Buffers))
	for i, b := range r.Buffers {
		bufs[i] = IoctlBuffer{At: int(b.At), Data: b.Data}
	}
	ret, arg, out, err := svc.TracerIoctl(int(r.Pid), int(r.Fd), r.Request, r.Arg, bufs)
	if err != nil {
		return nil, withErrno(err)
	}
	return &pb.IoctlResponse{Ret: ret, Arg: arg, Buffers: out}, nil
}

func (s *hostServer) GetFd(ctx context.Context, r *pb.FdRequest) (*pb.Empty, error) {
	svc, err := s.svc()
	if err != nil {
		return nil, err
	}
	fd, err := svc.Dup(int(r.Pid), int(r.Fd))
	if err != nil {
		return nil, err
	}
	defer syscall.Close(fd)
	if err := s.sendFd(r.Token, fd); err != nil {
		return nil, fmt.Errorf("send fd %d of pid %d to the plugin: %w", r.Fd, r.Pid, err)
	}
	return &pb.Empty{}, nil
}

// sendFd sends fd to the plugin over the fd socket with the token of the call waiting for it.
func (s *hostServer) sendFd(token uint64, fd int) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], token)
	_, _, err := s.p.fds.WriteMsgUnix(b[:], syscall.UnixRights(fd), nil)
	return err
}

func (s *hostServer) blobFile(r *pb.BlobFileRequest, create bool) (*pb.Empty, error) {
	svc, err := s.svc()
	if err != nil {
		return nil, err
	}
	open := svc.OpenBlobFile
	if create {
		open = svc.CreateBlobFile
	}
	f, err := open(s.p.Name, r.Name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := s.sendFd(r.Token, int(f.Fd())); err != nil {
		return nil, fmt.Errorf("send the file of blob %s to the plugin: %w", r.Name, err)
	}
	return &pb.Empty{}, nil
}

func (s *hostServer) CreateBlobFile(ctx context.Context, r *pb.BlobFileRequest) (*pb.Empty, error) {
	return s.blobFile(r, true)
}

func (s *hostServer) OpenBlobFile(ctx context.Context, r *pb.BlobFileRequest) (*pb.Empty, error) {
	return s.blobFile(r, false)
}

func (s *hostServer) PutBlob(ctx context.Context, r *pb.BlobRequest) (*pb.Empty, error) {
	svc, err := s.svc()
	if err != nil {
		return nil, err
	}
	return &pb.Empty{}, svc.PutBlob(s.p.Name, r.Name, r.Data)
}

func (s *hostServer) GetBlob(ctx context.Context, r *pb.BlobRequest) (*pb.BlobResponse, error) {
	svc, err := s.svc()
	if err != nil {
		return nil, err
	}
	b, err := svc.GetBlob(s.p.Name, r.Name)
	return &pb.BlobResponse{Data: b}, err
}
