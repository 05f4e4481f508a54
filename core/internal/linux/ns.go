package linux

import (
	"os"

	"golang.org/x/sys/unix"
)

// Namespace flags (linux/sched.h), for clone3, unshare and setns.
const (
	CloneNewPID      = unix.CLONE_NEWPID
	CloneNewUTS      = unix.CLONE_NEWUTS
	CloneNewIPC      = unix.CLONE_NEWIPC
	CloneNewNet      = unix.CLONE_NEWNET
	CloneNewNS       = unix.CLONE_NEWNS
	SysSethostname   = unix.SYS_SETHOSTNAME
	SysSetdomainname = unix.SYS_SETDOMAINNAME
)

// Setns moves the calling thread into the namespace fd refers to (kind: a CLONE_NEW* flag,
// or 0 for any).
func Setns(fd, kind int) error { return os.NewSyscallError("setns", unix.Setns(fd, kind)) }

// Uname returns the host and domain names of the calling thread's UTS namespace.
func Uname() (host, domain string, err error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", "", os.NewSyscallError("uname", err)
	}
	return unix.ByteSliceToString(u.Nodename[:]), unix.ByteSliceToString(u.Domainname[:]), nil
}
