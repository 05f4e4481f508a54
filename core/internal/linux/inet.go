package linux

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// InetSocket is what a TCP or UDP socket tells of itself through getsockopt and getsockname.
type InetSocket struct {
	Family   int // AF_INET or AF_INET6
	Type     int // SOCK_STREAM or SOCK_DGRAM
	Protocol int // IPPROTO_TCP, IPPROTO_UDP or IPPROTO_MPTCP
	State    int // TCP state (TCP_LISTEN 10, TCP_ESTABLISHED 1, TCP_CLOSE 7); 7 or 1 for UDP
	Local    netip.AddrPort
	Peer     netip.AddrPort // zero when not connected
	Backlog  uint32         // listeners: the listen(2) backlog
	Pending  uint32         // listeners: connections not accepted yet
	Opts     map[string]int // socket options worth restoring, by name
}

// The options kept across a checkpoint, by name.
var inetOpts = []struct {
	name       string
	level, opt int
	family     int // 0: any
	proto      int // 0: any
}{
	{"SO_REUSEADDR", unix.SOL_SOCKET, unix.SO_REUSEADDR, 0, 0},
	{"SO_REUSEPORT", unix.SOL_SOCKET, unix.SO_REUSEPORT, 0, 0},
	{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 0, 0},
	{"SO_BROADCAST", unix.SOL_SOCKET, unix.SO_BROADCAST, 0, unix.IPPROTO_UDP},
	{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 0, unix.IPPROTO_TCP},
	{"IPV6_V6ONLY", unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, unix.AF_INET6, 0},
}

// ErrNotInet means the socket is not a TCP, MPTCP or UDP socket.
var ErrNotInet = errors.New("not a TCP or UDP socket")

// IPProtoMPTCP is multipath TCP (IPPROTO_MPTCP): Go 1.24 and later make listeners with it
// by default. A listener or a bound socket is made again as it was; the connections it
// accepts from plain TCP clients are plain TCP sockets.
const IPProtoMPTCP = 262

// IsTCP says whether protocol is TCP or multipath TCP: both have TCP states and options.
func IsTCP(protocol int) bool { return protocol == unix.IPPROTO_TCP || protocol == IPProtoMPTCP }

// InspectInet reads a TCP or UDP socket through fd, a dup of it (nothing is changed).
func InspectInet(fd int) (*InetSocket, error) {
	s := &InetSocket{Opts: map[string]int{}}
	var err error
	if s.Family, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil {
		return nil, os.NewSyscallError("getsockopt(SO_DOMAIN)", err)
	}
	if s.Family != unix.AF_INET && s.Family != unix.AF_INET6 {
		return nil, ErrNotInet
	}
	s.Type, _ = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	s.Protocol, _ = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if !IsTCP(s.Protocol) && s.Protocol != unix.IPPROTO_UDP {
		return nil, ErrNotInet
	}
	if sa, err := unix.Getsockname(fd); err == nil {
		s.Local = addrPort(sa)
	}
	if sa, err := unix.Getpeername(fd); err == nil {
		s.Peer = addrPort(sa)
	}
	s.State = 7
	if IsTCP(s.Protocol) {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return nil, os.NewSyscallError("getsockopt(TCP_INFO)", err)
		}
		s.State = int(info.State)
		if s.State == 10 { // for a listener, tcp_get_info puts the backlogs here
			s.Pending, s.Backlog = info.Unacked, info.Sacked
		}
	} else if s.Peer.IsValid() {
		s.State = 1
	}
	for _, o := range inetOpts {
		if (o.family != 0 && o.family != s.Family) || (o.proto != 0 && o.proto != s.Protocol && !(o.proto == unix.IPPROTO_TCP && IsTCP(s.Protocol))) {
			continue
		}
		if v, err := unix.GetsockoptInt(fd, o.level, o.opt); err == nil && v != 0 {
			s.Opts[o.name] = v
		}
	}
	return s, nil
}

func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

func sockaddr(family int, ap netip.AddrPort) unix.Sockaddr {
	if family == unix.AF_INET {
		return &unix.SockaddrInet4{Addr: ap.Addr().Unmap().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

// MakeInet makes a socket like s: options set, bound to its address, listening or connected
// as it was. It returns the fd (close-on-exec).
func MakeInet(s *InetSocket) (int, error) {
	fd, err := unix.Socket(s.Family, s.Type|unix.SOCK_CLOEXEC, s.Protocol)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	fail := func(err error) (int, error) {
		unix.Close(fd)
		return -1, err
	}
	for _, o := range inetOpts {
		if v, ok := s.Opts[o.name]; ok {
			if err := unix.SetsockoptInt(fd, o.level, o.opt, v); err != nil {
				return fail(fmt.Errorf("setsockopt(%s): %w", o.name, err))
			}
		}
	}
	if s.Local.IsValid() && (s.Local.Port() != 0 || !s.Local.Addr().IsUnspecified()) {
		// Connections restored on the same port would stop the bind: reuse for the bind,
		// then put the option back as it was.
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if err := unix.Bind(fd, sockaddr(s.Family, s.Local)); err != nil {
			if errors.Is(err, unix.EADDRINUSE) {
				return fail(fmt.Errorf("port %s is taken: %w", s.Local, err))
			}
			return fail(fmt.Errorf("bind %s: %w", s.Local, err))
		}
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, s.Opts["SO_REUSEADDR"])
	}
	switch {
	case s.State == 10:
		if err := unix.Listen(fd, int(s.Backlog)); err != nil {
			return fail(os.NewSyscallError("listen", err))
		}
	case s.Protocol == unix.IPPROTO_UDP && s.Peer.IsValid():
		if err := unix.Connect(fd, sockaddr(s.Family, s.Peer)); err != nil {
			return fail(fmt.Errorf("connect %s: %w", s.Peer, err))
		}
	}
	return fd, nil
}

// RestoreTCP makes the established connection of s with the state c (TCP repair), with the
// socket's options set.
func RestoreTCP(s *InetSocket, c *TCPConn) (int, error) {
	if !s.Local.IsValid() || !s.Peer.IsValid() {
		return -1, fmt.Errorf("TCP connection without both addresses")
	}
	return TCPRestoreConn(s.Family, sockaddr(s.Family, s.Local), sockaddr(s.Family, s.Peer), c, func(fd int) error {
		for _, o := range inetOpts {
			if v, ok := s.Opts[o.name]; ok {
				if err := unix.SetsockoptInt(fd, o.level, o.opt, v); err != nil {
					return fmt.Errorf("setsockopt(%s): %w", o.name, err)
				}
			}
		}
		return nil
	})
}

// BindProbe says whether a socket like s could bind its address now: it makes one, with s's
// SO_REUSEADDR and SO_REUSEPORT, binds it and closes it. EADDRINUSE: the port is taken.
func BindProbe(s *InetSocket) error {
	fd, err := unix.Socket(s.Family, s.Type|unix.SOCK_CLOEXEC, s.Protocol)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	// As MakeInet binds: with SO_REUSEADDR (TIME_WAIT connections do not stop it).
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if v := s.Opts["SO_REUSEPORT"]; v != 0 {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, v)
	}
	if err := unix.Bind(fd, sockaddr(s.Family, s.Local)); err != nil {
		return fmt.Errorf("bind %s: %w", s.Local, err)
	}
	return nil
}
