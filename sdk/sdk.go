package sdk

import (
	"context"
	"os"

	"github.com/hashicorp/go-plugin"
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

// Claims says which files a plugin handles.
type Claims struct {
	PathPrefixes []string // files whose path starts with one of these
	CharMajors   []uint32 // character devices with one of these major numbers
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

// Serve runs p as a plugin process. It does not return.
func Serve(p Plugin) {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         map[string]plugin.Plugin{PluginName: &grpcPlugin{impl: p}},
		GRPCServer:      plugin.DefaultGRPCServer,
	})
}
