package core

import (
	"errors"
	"fmt"

	"github.com/gocr/gocr/core/internal/pluginhost"
)

// Sentinels a caller tells apart with errors.Is. docs/exit-codes.md maps them to exit codes.
var (
	// ErrNoProcess: a PID given does not exist.
	ErrNoProcess = errors.New("no such process")
	// ErrPermission: gocr may not trace or change a process.
	ErrPermission = errors.New("permission denied")
	// ErrTraced: a process is already traced by another tracer (a debugger, strace).
	ErrTraced = errors.New("already traced")
	// ErrUnsupported: the tree holds a resource gocr cannot checkpoint yet.
	ErrUnsupported = pluginhost.ErrUnsupported
	// ErrInterrupted: the operation was cancelled (Ctrl-C); everything was rolled back.
	ErrInterrupted = errors.New("interrupted")
	// ErrPidInUse: a PID the image needs is held by another process.
	ErrPidInUse = errors.New("pid in use")
	// ErrIncompatible: the image cannot be restored on this machine (CPU, kernel, files).
	ErrIncompatible = pluginhost.ErrIncompatible
	// ErrLockHeld: a file lock the tree held is held now by a process outside it.
	ErrLockHeld = errors.New("file lock held by another process")
	// ErrBadArgs: the request itself is wrong (no pid, a pid inside another tree).
	ErrBadArgs = errors.New("bad arguments")
)

// UnsupportedError names the process and the resource gocr cannot handle.
type UnsupportedError struct {
	Pid  int
	What string // "fd 5", "mapping 0x7f00..-0x7f10..", "thread 1234"
	Kind string // what it is: "socket:[1234]", "device mapping /dev/kfd"
	Hint string
}

func (e *UnsupportedError) Error() string {
	s := fmt.Sprintf("pid %d: %s: %s is not supported", e.Pid, e.What, e.Kind)
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

func (e *UnsupportedError) Unwrap() error { return ErrUnsupported }
