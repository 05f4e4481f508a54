package linux

import (
	"errors"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrNotNetlink means the socket is not a netlink socket.
var ErrNotNetlink = errors.New("not a netlink socket")

// NetlinkSocket is what gocr keeps of a netlink socket: its protocol and type, its port id
// (0: not bound yet), the multicast groups it joined, and the peer it is connected to.
type NetlinkSocket struct {
	Type, Protocol int
	Portid         uint32
	Groups         []uint32 // group numbers, from 1
	DstPortid      uint32
	DstGroup       uint32
}

// InspectNetlink reads a netlink socket through fd, a dup of it (nothing is changed).
func InspectNetlink(fd int) (*NetlinkSocket, error) {
	family, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, os.NewSyscallError("getsockopt(SO_DOMAIN)", err)
	}
	if family != unix.AF_NETLINK {
		return nil, ErrNotNetlink
	}
	s := &NetlinkSocket{}
	s.Type, _ = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	s.Protocol, _ = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if sa, err := unix.Getsockname(fd); err == nil {
		if nl, ok := sa.(*unix.SockaddrNetlink); ok {
			s.Portid = nl.Pid
		}
	}
	if sa, err := unix.Getpeername(fd); err == nil {
		if nl, ok := sa.(*unix.SockaddrNetlink); ok {
			s.DstPortid, s.DstGroup = nl.Pid, nl.Groups
		}
	}
	// NETLINK_LIST_MEMBERSHIPS fills a bitmap of the groups joined (all of them, not only
	// the first 32 that getsockname shows).
	bits := make([]uint32, 64)
	n := uint32(len(bits) * 4)
	if err := getsockoptBytes(fd, unix.SOL_NETLINK, unix.NETLINK_LIST_MEMBERSHIPS, bits, &n); err != nil {
		return nil, os.NewSyscallError("getsockopt(NETLINK_LIST_MEMBERSHIPS)", err)
	}
	for i := 0; i < len(bits) && uint32(i*4) < n; i++ {
		for b := 0; b < 32; b++ {
			if bits[i]&(1<<b) != 0 {
				s.Groups = append(s.Groups, uint32(i*32+b+1))
			}
		}
	}
	return s, nil
}

// MakeNetlink makes a netlink socket like s: bound to the same port id, in the same groups,
// connected to the same peer.
func MakeNetlink(s *NetlinkSocket) (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, s.Type|unix.SOCK_CLOEXEC, s.Protocol)
	if err != nil {
		return -1, os.NewSyscallError("socket(AF_NETLINK)", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, os.NewSyscallError(what, err)
	}
	if s.Portid != 0 {
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: s.Portid}); err != nil {
			return fail("bind netlink port id", err)
		}
	}
	for _, g := range s.Groups {
		if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, int(g)); err != nil {
			return fail("setsockopt(NETLINK_ADD_MEMBERSHIP)", err)
		}
	}
	if s.DstPortid != 0 || s.DstGroup != 0 {
		if err := unix.Connect(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: s.DstPortid, Groups: s.DstGroup}); err != nil {
			return fail("connect netlink", err)
		}
	}
	return fd, nil
}

// getsockoptBytes is getsockopt(2) into a buffer of uint32s; n is its size in, the size the
// kernel wanted out.
func getsockoptBytes(fd, level, opt int, buf []uint32, n *uint32) error {
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(n)), 0)
	if e != 0 {
		return e
	}
	return nil
}
