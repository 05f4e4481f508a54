package linux

import (
	"fmt"
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

// linkFlags reads the flags of link name of the calling thread's network namespace, and
// gives the socket and request that read them, to set them with.
func linkFlags(name string) (int, *unix.Ifreq, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, os.NewSyscallError("socket", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		err = unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr)
	}
	if err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("link %s: %w", name, os.NewSyscallError("SIOCGIFFLAGS", err))
	}
	return fd, ifr, nil
}

// LinkUp tells whether the link name of the calling thread's network namespace is up.
func LinkUp(name string) (bool, error) {
	fd, ifr, err := linkFlags(name)
	if err != nil {
		return false, err
	}
	unix.Close(fd)
	return ifr.Uint16()&unix.IFF_UP != 0, nil
}

// SetLinkUp brings the link name of the calling thread's network namespace up.
func SetLinkUp(name string) error {
	fd, ifr, err := linkFlags(name)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring link %s up: %w", name, os.NewSyscallError("SIOCSIFFLAGS", err))
	}
	return nil
}
