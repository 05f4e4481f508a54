// Package pidinit is gocr's init of a pid namespace that a restore makes (gocr restore
// --new-pidns): the gocr binary started under this name is the namespace's pid 1 and the
// restored tree's root is its child. Every binary that can be a restore's stub (gocr, and the
// test binaries that restore in-process) runs Run when its argv[0] is Name.
package pidinit

import (
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"
)

// Name is argv[0] of the init; argv[1] is the pid of the tree's root in the namespace.
const Name = "gocr-pidns-init"

// readyFd is the init's end of a pipe the restore reads.
const readyFd = 4

// Run passes the signals the init gets to the root, reaps every orphan of the namespace, and
// when the root ends, ends the same way: its exit code, or 128 + the signal that killed it.
// (When pid 1 ends, the kernel kills what is left in the namespace.)
func Run(args []string) int {
	if len(args) != 2 {
		return 2
	}
	root, err := strconv.Atoi(args[1])
	if err != nil || root <= 1 {
		return 2
	}
	// gocr starts the init with every signal blocked, so that none ends it before it passes
	// them on: now that they are, this thread takes them (the others stay blocked).
	runtime.LockOSThread()
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs)
	var none [2]uint32
	syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, 2 /* SIG_SETMASK */, uintptr(unsafe.Pointer(&none)), 0, 8, 0, 0)
	// The restore waits for this before it returns: until now a SIGTERM would end the init
	// (the Go runtime unblocks it as it starts) instead of being passed on.
	syscall.Write(readyFd, []byte{1})
	syscall.Close(readyFd)
	go func() {
		for s := range sigs {
			if s == syscall.SIGCHLD || s == syscall.SIGURG { // ours, and the Go runtime's
				continue
			}
			syscall.Kill(root, s.(syscall.Signal))
		}
	}()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return 1 // no child left, and the root was not seen ending
		}
		if pid != root {
			continue // an orphan of the namespace
		}
		if ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
}

// RunIfInit runs the init and exits when this process is one.
func RunIfInit() {
	if len(os.Args) > 0 && os.Args[0] == Name {
		os.Exit(Run(os.Args))
	}
}
