package linux

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"unsafe"

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
	Ended    bool           // TCP: closed after a connection, or an attempt, ended
	// Opts are the integer options of inetOpts, by name, as getsockopt read them; and
	// SO_RCVBUF and SO_SNDBUF when they were set (SO_BUF_LOCK has their bit).
	Opts       map[string]int
	Linger     *int32 // SO_LINGER when on: its seconds
	RcvTimeo   int64  // SO_RCVTIMEO, microseconds
	SndTimeo   int64  // SO_SNDTIMEO, microseconds
	BindDevice string // SO_BINDTODEVICE
	Filter     []byte // SO_ATTACH_FILTER: struct sock_filter entries, 8 bytes each
	Shutdown   uint8  // RCV_SHUTDOWN 1 | SEND_SHUTDOWN 2, from sock_diag (see InetShutdowns)
	Congestion string
}

// An integer socket option. They are set again in this order: IP_TOS before SO_PRIORITY
// (setting the TOS sets the priority), SO_BUF_LOCK and SO_LOCK_FILTER last.
type inetOpt struct {
	name       string
	level, opt int
	family     int // 0: any
	proto      int // 0: any; IPPROTO_TCP: TCP and MPTCP
}

// The integer options kept across a checkpoint. Each is read at the dump, and set at the
// restore where a new socket has another value.
var inetOpts = []inetOpt{
	{"IP_TOS", unix.IPPROTO_IP, unix.IP_TOS, unix.AF_INET, 0},
	{"IP_TTL", unix.IPPROTO_IP, unix.IP_TTL, unix.AF_INET, 0},
	{"IP_FREEBIND", unix.IPPROTO_IP, unix.IP_FREEBIND, unix.AF_INET, 0},
	{"IP_TRANSPARENT", unix.IPPROTO_IP, unix.IP_TRANSPARENT, unix.AF_INET, 0},
	{"IP_BIND_ADDRESS_NO_PORT", unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, unix.AF_INET, 0},
	{"IP_PKTINFO", unix.IPPROTO_IP, unix.IP_PKTINFO, unix.AF_INET, 0},
	{"IP_RECVTOS", unix.IPPROTO_IP, unix.IP_RECVTOS, unix.AF_INET, 0},
	{"IP_RECVTTL", unix.IPPROTO_IP, unix.IP_RECVTTL, unix.AF_INET, 0},
	{"IP_RECVERR", unix.IPPROTO_IP, unix.IP_RECVERR, unix.AF_INET, 0},
	{"IP_RECVOPTS", unix.IPPROTO_IP, unix.IP_RECVOPTS, unix.AF_INET, 0},
	{"IP_RECVORIGDSTADDR", unix.IPPROTO_IP, unix.IP_RECVORIGDSTADDR, unix.AF_INET, 0},
	{"IP_MTU_DISCOVER", unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.AF_INET, 0},
	{"IP_MULTICAST_TTL", unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, unix.AF_INET, unix.IPPROTO_UDP},
	{"IP_MULTICAST_LOOP", unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, unix.AF_INET, unix.IPPROTO_UDP},
	{"IP_MULTICAST_ALL", unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, unix.AF_INET, unix.IPPROTO_UDP},
	{"IP_NODEFRAG", unix.IPPROTO_IP, unix.IP_NODEFRAG, unix.AF_INET, 0},
	{"IPV6_V6ONLY", unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, unix.AF_INET6, 0},
	{"IPV6_TCLASS", unix.IPPROTO_IPV6, unix.IPV6_TCLASS, unix.AF_INET6, 0},
	{"IPV6_UNICAST_HOPS", unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, unix.AF_INET6, 0},
	{"IPV6_MULTICAST_HOPS", unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, unix.AF_INET6, unix.IPPROTO_UDP},
	{"IPV6_MULTICAST_LOOP", unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, unix.AF_INET6, unix.IPPROTO_UDP},
	{"IPV6_RECVPKTINFO", unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, unix.AF_INET6, 0},
	{"IPV6_RECVTCLASS", unix.IPPROTO_IPV6, unix.IPV6_RECVTCLASS, unix.AF_INET6, 0},
	{"IPV6_RECVHOPLIMIT", unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, unix.AF_INET6, 0},
	{"IPV6_RECVERR", unix.IPPROTO_IPV6, unix.IPV6_RECVERR, unix.AF_INET6, 0},
	{"IPV6_MTU_DISCOVER", unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.AF_INET6, 0},
	{"IPV6_FREEBIND", unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, unix.AF_INET6, 0},
	{"IPV6_TRANSPARENT", unix.IPPROTO_IPV6, unix.IPV6_TRANSPARENT, unix.AF_INET6, 0},
	{"IPV6_DONTFRAG", unix.IPPROTO_IPV6, unix.IPV6_DONTFRAG, unix.AF_INET6, 0},
	{"IPV6_RECVORIGDSTADDR", unix.IPPROTO_IPV6, unix.IPV6_RECVORIGDSTADDR, unix.AF_INET6, 0},
	{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 0, unix.IPPROTO_TCP},
	{"TCP_CORK", unix.IPPROTO_TCP, unix.TCP_CORK, 0, unix.IPPROTO_TCP},
	{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 0, unix.IPPROTO_TCP},
	{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 0, unix.IPPROTO_TCP},
	{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 0, unix.IPPROTO_TCP},
	{"TCP_USER_TIMEOUT", unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 0, unix.IPPROTO_TCP},
	{"TCP_DEFER_ACCEPT", unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 0, unix.IPPROTO_TCP},
	{"TCP_FASTOPEN", unix.IPPROTO_TCP, unix.TCP_FASTOPEN, 0, unix.IPPROTO_TCP},
	{"TCP_FASTOPEN_CONNECT", unix.IPPROTO_TCP, unix.TCP_FASTOPEN_CONNECT, 0, unix.IPPROTO_TCP},
	{"TCP_NOTSENT_LOWAT", unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, 0, unix.IPPROTO_TCP},
	{"TCP_SYNCNT", unix.IPPROTO_TCP, unix.TCP_SYNCNT, 0, unix.IPPROTO_TCP},
	{"TCP_LINGER2", unix.IPPROTO_TCP, unix.TCP_LINGER2, 0, unix.IPPROTO_TCP},
	{"TCP_THIN_LINEAR_TIMEOUTS", unix.IPPROTO_TCP, unix.TCP_THIN_LINEAR_TIMEOUTS, 0, unix.IPPROTO_TCP},
	{"UDP_SEGMENT", unix.IPPROTO_UDP, unix.UDP_SEGMENT, 0, unix.IPPROTO_UDP},
	{"UDP_GRO", unix.IPPROTO_UDP, unix.UDP_GRO, 0, unix.IPPROTO_UDP},
	{"SO_REUSEADDR", unix.SOL_SOCKET, unix.SO_REUSEADDR, 0, 0},
	{"SO_REUSEPORT", unix.SOL_SOCKET, unix.SO_REUSEPORT, 0, 0},
	{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 0, 0},
	{"SO_BROADCAST", unix.SOL_SOCKET, unix.SO_BROADCAST, 0, unix.IPPROTO_UDP},
	{"SO_NO_CHECK", unix.SOL_SOCKET, unix.SO_NO_CHECK, 0, unix.IPPROTO_UDP},
	{"SO_PRIORITY", unix.SOL_SOCKET, unix.SO_PRIORITY, 0, 0},
	{"SO_MARK", unix.SOL_SOCKET, unix.SO_MARK, 0, 0},
	{"SO_RCVLOWAT", unix.SOL_SOCKET, unix.SO_RCVLOWAT, 0, 0},
	{"SO_OOBINLINE", unix.SOL_SOCKET, unix.SO_OOBINLINE, 0, 0},
	{"SO_DONTROUTE", unix.SOL_SOCKET, unix.SO_DONTROUTE, 0, 0},
	{"SO_TIMESTAMP", unix.SOL_SOCKET, unix.SO_TIMESTAMP, 0, 0},
	{"SO_TIMESTAMPNS", unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 0, 0},
	{"SO_RXQ_OVFL", unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 0, 0},
	{"SO_SELECT_ERR_QUEUE", unix.SOL_SOCKET, unix.SO_SELECT_ERR_QUEUE, 0, 0},
	{"SO_BUF_LOCK", unix.SOL_SOCKET, unix.SO_BUF_LOCK, 0, 0},
	{"SO_LOCK_FILTER", unix.SOL_SOCKET, unix.SO_LOCK_FILTER, 0, 0},
}

func (o inetOpt) applies(family, protocol int) bool {
	return (o.family == 0 || o.family == family) &&
		(o.proto == 0 || o.proto == protocol || (o.proto == unix.IPPROTO_TCP && IsTCP(protocol)))
}

// SO_BUF_LOCK's bits (SOCK_SNDBUF_LOCK, SOCK_RCVBUF_LOCK): a buffer size set by the program.
const (
	sndbufLock = 1
	rcvbufLock = 2
)

// ErrNotInet means the socket is not a TCP, MPTCP or UDP socket.
var ErrNotInet = errors.New("not a TCP or UDP socket")

// IPProtoMPTCP is multipath TCP (IPPROTO_MPTCP): Go 1.24 and later make listeners with it
// by default. A listener or a bound socket is made again as it was; the connections it
// accepts from plain TCP clients are plain TCP sockets.
const IPProtoMPTCP = 262

// IsTCP says whether protocol is TCP or multipath TCP: both have TCP states and options.
func IsTCP(protocol int) bool { return protocol == unix.IPPROTO_TCP || protocol == IPProtoMPTCP }

// TCPSynSent is TCP_SYN_SENT: a connect in progress.
const TCPSynSent = 2

// IsUDP says whether protocol is UDP.
func IsUDP(protocol int) bool { return protocol == unix.IPPROTO_UDP }

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
		// Closed, but segments went out or came in: a connection (or its attempt) that ended,
		// not a socket that was only bound.
		s.Ended = s.State == 7 && (info.Segs_out > 0 || info.Segs_in > 0)
	} else if s.Peer.IsValid() {
		s.State = 1
	}
	if err := s.readOpts(fd); err != nil {
		return nil, err
	}
	return s, nil
}

// readOpts reads the options that are not addresses or states.
func (s *InetSocket) readOpts(fd int) error {
	for _, o := range inetOpts {
		if !o.applies(s.Family, s.Protocol) {
			continue
		}
		if v, err := unix.GetsockoptInt(fd, o.level, o.opt); err == nil {
			s.Opts[o.name] = v
		}
	}
	locks := s.Opts["SO_BUF_LOCK"]
	for _, b := range []struct {
		name string
		opt  int
		lock int
	}{{"SO_RCVBUF", unix.SO_RCVBUF, rcvbufLock}, {"SO_SNDBUF", unix.SO_SNDBUF, sndbufLock}} {
		if locks&b.lock != 0 {
			v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, b.opt)
			if err != nil {
				return os.NewSyscallError("getsockopt("+b.name+")", err)
			}
			s.Opts[b.name] = v
		}
	}
	l, err := unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER)
	if err != nil {
		return os.NewSyscallError("getsockopt(SO_LINGER)", err)
	}
	if l.Onoff != 0 {
		s.Linger = &l.Linger
	}
	for _, t := range []struct {
		opt int
		to  *int64
	}{{unix.SO_RCVTIMEO, &s.RcvTimeo}, {unix.SO_SNDTIMEO, &s.SndTimeo}} {
		tv, err := unix.GetsockoptTimeval(fd, unix.SOL_SOCKET, t.opt)
		if err != nil {
			return os.NewSyscallError("getsockopt(SO_RCVTIMEO/SO_SNDTIMEO)", err)
		}
		*t.to = tv.Sec*1e6 + tv.Usec
	}
	if dev, err := unix.GetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE); err == nil {
		s.BindDevice = dev
	}
	if IsTCP(s.Protocol) {
		if cc, err := unix.GetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION); err == nil && cc != defaultCongestion() {
			s.Congestion = cc
		}
	}
	f, err := getFilter(fd)
	if err != nil {
		return err
	}
	if len(f) > 0 {
		s.Filter = append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), len(f)*sockFilterSize)...)
	}
	return nil
}

// ErrBPFFilter means a socket has an eBPF program attached (SO_ATTACH_BPF), which cannot be
// read back.
var ErrBPFFilter = errors.New("an eBPF socket filter (SO_ATTACH_BPF) cannot be read back")

// sockFilterSize is sizeof(struct sock_filter).
const sockFilterSize = int(unsafe.Sizeof(unix.SockFilter{}))

// getFilter reads the classic BPF filter of a socket (SO_GET_FILTER), nil when none.
func getFilter(fd int) ([]unix.SockFilter, error) {
	// With a length of 0 the kernel gives the number of instructions.
	var n uint32
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_GET_FILTER, 0, uintptr(unsafe.Pointer(&n)), 0); e != 0 {
		if e == unix.EACCES || e == unix.EINVAL {
			return nil, ErrBPFFilter
		}
		return nil, os.NewSyscallError("getsockopt(SO_GET_FILTER)", e)
	}
	if n == 0 {
		return nil, nil
	}
	f := make([]unix.SockFilter, n)
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_GET_FILTER,
		uintptr(unsafe.Pointer(&f[0])), uintptr(unsafe.Pointer(&n)), 0); e != 0 {
		return nil, os.NewSyscallError("getsockopt(SO_GET_FILTER)", e)
	}
	return f[:n], nil
}

// defaultCongestion is the congestion control a new TCP socket gets here.
func defaultCongestion() string {
	b, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
	return strings.TrimSpace(string(b))
}

// setOpts gives a new socket fd the options of s: where the new socket's value differs, so
// that an option the program never set still follows the system's default. Before bind.
func (s *InetSocket) setOpts(fd int) error {
	if n := len(s.Filter) / sockFilterSize; n > 0 {
		if len(s.Filter)%sockFilterSize != 0 || n > 0xffff {
			return fmt.Errorf("socket filter of %d bytes", len(s.Filter))
		}
		f := make([]unix.SockFilter, n)
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), len(s.Filter)), s.Filter)
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
			&unix.SockFprog{Len: uint16(n), Filter: &f[0]}); err != nil {
			return os.NewSyscallError("setsockopt(SO_ATTACH_FILTER)", err)
		}
	}
	if s.BindDevice != "" {
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, s.BindDevice); err != nil {
			return fmt.Errorf("setsockopt(SO_BINDTODEVICE %s): %w", s.BindDevice, err)
		}
	}
	if s.Congestion != "" {
		if err := unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, s.Congestion); err != nil {
			return fmt.Errorf("setsockopt(TCP_CONGESTION %s): %w", s.Congestion, err)
		}
	}
	// The kernel doubles what it is given; FORCE: gocr may go above the system's maximum, as
	// the program did (or the maximum was lower).
	for _, b := range []struct {
		name       string
		opt, force int
	}{{"SO_RCVBUF", unix.SO_RCVBUF, unix.SO_RCVBUFFORCE}, {"SO_SNDBUF", unix.SO_SNDBUF, unix.SO_SNDBUFFORCE}} {
		if v, ok := s.Opts[b.name]; ok {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, b.force, v/2); err != nil {
				return fmt.Errorf("setsockopt(%s %d): %w", b.name, v, err)
			}
		}
	}
	if s.Linger != nil {
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: *s.Linger}); err != nil {
			return os.NewSyscallError("setsockopt(SO_LINGER)", err)
		}
	}
	for _, t := range []struct {
		name string
		opt  int
		us   int64
	}{{"SO_RCVTIMEO", unix.SO_RCVTIMEO, s.RcvTimeo}, {"SO_SNDTIMEO", unix.SO_SNDTIMEO, s.SndTimeo}} {
		if t.us != 0 {
			tv := unix.NsecToTimeval(t.us * 1000)
			if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, t.opt, &tv); err != nil {
				return os.NewSyscallError("setsockopt("+t.name+")", err)
			}
		}
	}
	for _, o := range inetOpts {
		v, ok := s.Opts[o.name]
		if !ok || !o.applies(s.Family, s.Protocol) {
			continue
		}
		if now, err := unix.GetsockoptInt(fd, o.level, o.opt); err == nil && now == v {
			continue
		}
		if err := unix.SetsockoptInt(fd, o.level, o.opt, v); err != nil {
			return fmt.Errorf("setsockopt(%s %d): %w", o.name, v, err)
		}
	}
	return nil
}

// AfterRepair gives a connection taken out of repair mode its SO_REUSEADDR again: leaving
// repair mode clears it.
func AfterRepair(fd int, reuseAddr int) error {
	if reuseAddr == 0 {
		return nil
	}
	return os.NewSyscallError("setsockopt(SO_REUSEADDR)", unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, reuseAddr))
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
	if err := s.setOpts(fd); err != nil {
		return fail(err)
	}
	bound := s.Local.IsValid() && (s.Local.Port() != 0 || !s.Local.Addr().IsUnspecified())
	if bound {
		// Connections restored on the same port would stop the bind, and the listen (which
		// checks the port again): reuse for both, then put the option back as it was.
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if err := unix.Bind(fd, sockaddr(s.Family, s.Local)); err != nil {
			if errors.Is(err, unix.EADDRINUSE) {
				return fail(fmt.Errorf("port %s is taken: %w", s.Local, err))
			}
			return fail(fmt.Errorf("bind %s: %w", s.Local, err))
		}
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
	case s.State == TCPSynSent:
		// The connection is tried again: a new SYN, as a retransmission would have sent
		// (the socket is non-blocking here; the process's own flags come after).
		if err := unix.SetNonblock(fd, true); err != nil {
			return fail(err)
		}
		if err := unix.Connect(fd, sockaddr(s.Family, s.Peer)); err != nil && err != unix.EINPROGRESS {
			return fail(fmt.Errorf("connect %s: %w", s.Peer, err))
		}
	}
	if bound {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, s.Opts["SO_REUSEADDR"])
	}
	if s.Shutdown != 0 {
		// The kernel marks an unconnected socket shut down too, and says ENOTCONN.
		if err := unix.Shutdown(fd, int(s.Shutdown)-1); err != nil && err != unix.ENOTCONN {
			return fail(os.NewSyscallError("shutdown", err))
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
	return TCPRestoreConn(s.Family, sockaddr(s.Family, s.Local), sockaddr(s.Family, s.Peer), c, s.setOpts)
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
	if s.BindDevice != "" {
		unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, s.BindDevice)
	}
	if err := unix.Bind(fd, sockaddr(s.Family, s.Local)); err != nil {
		return fmt.Errorf("bind %s: %w", s.Local, err)
	}
	return nil
}
