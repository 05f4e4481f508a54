package main

import (
	"errors"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/core/image"
)

// Exit codes, documented in docs/exit-codes.md. This is the one place they are decided.
const (
	exitOK          = 0
	exitFailure     = 1   // anything not listed below
	exitUsage       = 2   // bad command line or arguments
	exitNoProcess   = 3   // a PID given does not exist
	exitPermission  = 4   // may not trace: permissions, or traced by someone else
	exitUnsupported = 5   // the tree holds something gocr cannot checkpoint yet
	exitImage       = 6   // the image is missing, damaged, of another version, or the directory is in use
	exitConflict    = 7   // restore: a PID or a file lock is taken, or the image does not fit this machine
	exitCheckFailed = 8   // check mode: a restore here would fail; gocr check: a required feature is missing
	exitInterrupted = 130 // cancelled by Ctrl-C or SIGTERM; everything was rolled back
)

// usageError marks errors in how gocr was called.
type usageError struct{ error }

func exitCode(err error) int {
	var ue usageError
	switch {
	case errors.Is(err, core.ErrInterrupted):
		return exitInterrupted
	case errors.As(err, &ue), errors.Is(err, core.ErrBadArgs):
		return exitUsage
	case errors.Is(err, core.ErrNoProcess):
		return exitNoProcess
	case errors.Is(err, core.ErrPermission), errors.Is(err, core.ErrTraced):
		return exitPermission
	case errors.Is(err, core.ErrUnsupported):
		return exitUnsupported
	case errors.Is(err, image.ErrCorrupt), errors.Is(err, image.ErrVersion), errors.Is(err, image.ErrNoImage), errors.Is(err, image.ErrExists):
		return exitImage
	case errors.Is(err, core.ErrPidInUse), errors.Is(err, core.ErrLockHeld), errors.Is(err, core.ErrIncompatible):
		return exitConflict
	case errors.Is(err, core.ErrCheckFailed):
		return exitCheckFailed
	}
	if isCobraUsage(err) {
		return exitUsage
	}
	return exitFailure
}
