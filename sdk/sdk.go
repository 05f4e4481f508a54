package sdk

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors a hook returns, wrapped (fmt.Errorf("...: %w", sdk.ErrUnsupported)), so that gocr
// tells the user which kind of failure it is (its exit code says so too):
//
//	ErrUnsupported   dump: the process holds something the plugin cannot checkpoint
//	ErrIncompatible  restore or check: this machine cannot take what the image holds
var (
	ErrUnsupported  = errors.New("not supported")
	ErrIncompatible = errors.New("does not fit this machine")
)

// APIVersion is the plugin API this SDK speaks. Host and plugin agree on one at Init.
const APIVersion = 1

// Handshake is go-plugin's handshake: its ProtocolVersion changes only with a breaking change
// of the wire.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "GOCR_PLUGIN",
	MagicCookieValue: "0b6c2d5e-gocr-plugin-v1",
}

// PluginName is the name under which the plugin is dispensed.
const PluginName = "gocr"

// File is one fd of one process that the plugin claimed.
type File struct {
	Pid   int
	Fd    int
	Path  string // as /proc/PID/fd/N shows it
	Flags uint32 // open(2) flags
	Pos   int64
	Rdev  uint64 // for a device
}

// Claims says which files and mappings a plugin handles.
type Claims struct {
	PathPrefixes    []string // fds on files whose path starts with one of these
	CharMajors      []uint32 // fds on, and mappings of, character devices with these majors
	MappingPrefixes []string // mappings of files whose path starts with one of these
}

// VMA is one claimed mapping of one process.
type VMA struct {
	Pid        int
	Start, End uint64
	Prot       uint32 // PROT_READ|PROT_WRITE|PROT_EXEC
	Shared     bool
	Pgoff      uint64 // offset in the file, in bytes
	Path       string
	Rdev       uint64
}

// VMADumper saves claimed mappings, in address order for one process.
type VMADumper interface {
	DumpVMA(ctx context.Context, v VMA) ([]byte, error)
}

// VMARestorer makes claimed mappings again, once the process's other memory is in place, in
// address order for one process. It uses the Host to act inside the process.
type VMARestorer interface {
	RestoreVMA(ctx context.Context, v VMA, blob []byte) error
}

// DeviceHooks are the once-per-operation device hooks; a plugin implements those it needs:
//
//	PauseDevices(ctx, pids)       dump: before those processes are frozen
//	CheckpointDevices(ctx, pids)  dump: once the whole tree is frozen
//	DumpDevicesLate(ctx, pids)    dump: after every process was dumped
//	RestoreInit(ctx, pids)        restore: before any file or mapping is restored
//	ResumeDevicesLate(ctx, pids)  restore: once every process is in place, before any runs
type (
	Pauser interface {
		PauseDevices(ctx context.Context, pids []int) error
	}
	Checkpointer interface {
		CheckpointDevices(ctx context.Context, pids []int) error
	}
	LateDumper interface {
		DumpDevicesLate(ctx context.Context, pids []int) error
	}
	RestoreIniter interface {
		RestoreInit(ctx context.Context, pids []int) error
	}
	Resumer interface {
		ResumeDevicesLate(ctx context.Context, pids []int) error
	}
)

// Checker says in check mode whether a restore here would work, listing the problems.
type Checker interface {
	Check(ctx context.Context, pids []int) ([]string, error)
}

// Host is what a plugin may ask of gocr during a call.
type Host interface {
	// ReadMemory and WriteMemory read and write a process's memory.
	ReadMemory(ctx context.Context, pid int, addr uint64, n int) ([]byte, error)
	WriteMemory(ctx context.Context, pid int, addr uint64, b []byte) error
	// Syscall runs a syscall inside the process and returns its result.
	Syscall(ctx context.Context, pid int, nr int64, args ...uint64) (uint64, error)
	// TracerIoctl runs ioctl(fd, request, arg) on the process's fd from gocr's tracer thread
	// and returns the result and arg as the ioctl left it. Where arg points to other memory
	// (arrays the driver fills), bufs give it: gocr puts each buffer in its own memory, writes
	// its address into arg at buf.At, and copies back into buf.Data what the ioctl left.
	TracerIoctl(ctx context.Context, pid, fd int, request uint64, arg []byte, bufs ...*IoctlBuffer) (int64, []byte, error)
	// GetFd returns a dup of the process's fd (same open file description).
	GetFd(ctx context.Context, pid, fd int) (*os.File, error)
	// PutBlob (dump) and GetBlob (restore) store and read named data of the plugin in the
	// image; names are lowercase letters, digits and '-'.
	PutBlob(ctx context.Context, name string, data []byte) error
	GetBlob(ctx context.Context, name string) ([]byte, error)
	// CreateBlobFile (dump) returns a file of the image to write a large named blob into
	// (device memory: it never crosses gRPC); gocr checksums it when the image is committed.
	// OpenBlobFile (restore) returns it read-only. The caller closes the file.
	CreateBlobFile(ctx context.Context, name string) (*os.File, error)
	OpenBlobFile(ctx context.Context, name string) (*os.File, error)
}

// AtFdcwd is AT_FDCWD as a Host.Syscall argument (openat and the like, run inside a process).
const AtFdcwd = ^uint64(99) // -100

// IoctlBuffer is memory an ioctl's argument points to (see Host.TracerIoctl): At is the
// offset in arg of the u64 pointer field, Data the buffer, replaced by what the ioctl left.
type IoctlBuffer struct {
	At   int
	Data []byte
}

// HostUser is implemented by plugins that call the Host: gocr gives it at Init.
type HostUser interface {
	UseHost(h Host)
}

// Plugin is what every plugin implements.
type Plugin interface {
	// Name is the plugin's name (NAME of gocr-plugin-NAME).
	Name() string
	// Claims is asked once, at Init.
	Claims() Claims
	// DumpFile saves a claimed fd; the blob goes into the image. For one process, calls
	// come in fd order, one at a time; calls for different processes may overlap.
	DumpFile(ctx context.Context, f File) ([]byte, error)
	// RestoreFile makes the fd again from the blob DumpFile returned, and returns it; gocr
	// installs it in the process at f.Fd and closes the plugin's copy.
	RestoreFile(ctx context.Context, f File, blob []byte) (*os.File, error)
}

// Versioned is implemented by a plugin that speaks another API version than this SDK's.
type Versioned interface {
	APIVersion() uint32
}

// Finisher is implemented by plugins that want to know how the operation ended.
type Finisher interface {
	Fini(ok bool)
}

// Serve runs p as a plugin process. It does not return. The plugin process ends when gocr
// does, even when gocr is killed (the contract: a plugin never outlives its gocr).
func Serve(p Plugin) {
	go watchParent(os.Getppid())
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         map[string]plugin.Plugin{PluginName: &grpcPlugin{impl: p}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return plugin.DefaultGRPCServer(append(opts, grpc.UnaryInterceptor(kindOfError)))
		},
	})
}

// watchParent ends the plugin once its parent, gocr, is gone (it is then some other
// process's child).
func watchParent(ppid int) {
	for {
		time.Sleep(100 * time.Millisecond)
		if os.Getppid() != ppid {
			os.Exit(1)
		}
	}
}

// kindOfError carries the kind of a hook's error to gocr in its gRPC status code:
// Unimplemented for ErrUnsupported, FailedPrecondition for ErrIncompatible.
func kindOfError(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	switch {
	case errors.Is(err, ErrUnsupported):
		return resp, status.Error(codes.Unimplemented, err.Error())
	case errors.Is(err, ErrIncompatible):
		return resp, status.Error(codes.FailedPrecondition, err.Error())
	}
	return resp, err
}
