package linux

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// unixDiagReq is struct unix_diag_req (linux/unix_diag.h), 24 bytes.
type unixDiagReq struct {
	Family   uint8
	Protocol uint8
	_        uint16
	States   uint32
	Ino      uint32
	Show     uint32
	Cookie   [2]uint32
}

// What unix_diag is asked to show (UDIAG_SHOW_*), and its attributes (UNIX_DIAG_*).
const (
	udiagShowName     = 0x01
	udiagShowVfs      = 0x02
	udiagShowPeer     = 0x04
	udiagShowIcons    = 0x08
	udiagShowRqlen    = 0x10
	unixDiagName      = 0
	unixDiagVfs       = 1
	unixDiagPeer      = 2
	unixDiagIcons     = 3
	unixDiagRqlen     = 4
	unixDiagShutdown  = 6
	sockDiagByFamily  = 20
	unixDiagMsgLength = 16
)

// UnixSocket is what sock_diag tells of one unix socket.
type UnixSocket struct {
	Ino      uint32
	Type     int // SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
	State    int // TCP_ESTABLISHED (1), TCP_CLOSE (7), TCP_LISTEN (10)
	Peer     uint32
	Name     string // bound path; an abstract name starts with '@'
	RQueue   uint32 // bytes queued (or pending connections, for a listener)
	WQueue   uint32 // backlog, for a listener
	Icons    []uint32
	Shutdown uint8 // RCV_SHUTDOWN 1 | SEND_SHUTDOWN 2
	// VfsIno and VfsDev are the inode and device of the file it was bound to (0: none).
	VfsIno, VfsDev uint32
}

// Socket states (include/net/tcp_states.h).
const (
	SockEstablished = 1
	SockClose       = 7
	SockListen      = 10
)

// UnixDiag looks up the unix socket with inode ino through NETLINK_SOCK_DIAG.
func UnixDiag(ino uint32) (*UnixSocket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, os.NewSyscallError("socket(NETLINK_SOCK_DIAG)", err)
	}
	defer unix.Close(fd)
	req := unixDiagReq{Family: unix.AF_UNIX, States: ^uint32(0), Ino: ino,
		Show: udiagShowName | udiagShowVfs | udiagShowPeer | udiagShowIcons | udiagShowRqlen, Cookie: [2]uint32{^uint32(0), ^uint32(0)}}
	msg := make([]byte, unix.NLMSG_HDRLEN+int(unsafe.Sizeof(req)))
	binary.LittleEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.LittleEndian.PutUint16(msg[4:], sockDiagByFamily)
	binary.LittleEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST)
	copy(msg[unix.NLMSG_HDRLEN:], unsafe.Slice((*byte)(unsafe.Pointer(&req)), unsafe.Sizeof(req)))
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, os.NewSyscallError("sendto(sock_diag)", err)
	}
	buf := make([]byte, 64<<10)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return nil, os.NewSyscallError("recvfrom(sock_diag)", err)
	}
	for b := buf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
		l, typ := int(binary.LittleEndian.Uint32(b)), binary.LittleEndian.Uint16(b[4:])
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return nil, fmt.Errorf("sock_diag: bad answer")
		}
		data := b[unix.NLMSG_HDRLEN:l]
		if typ == unix.NLMSG_ERROR {
			if len(data) >= 4 {
				if e := int32(binary.LittleEndian.Uint32(data)); e != 0 {
					return nil, os.NewSyscallError("sock_diag", unix.Errno(-e))
				}
			}
		} else if typ != unix.NLMSG_DONE {
			return parseUnixDiag(data)
		}
		b = b[(l+3)&^3:]
	}
	return nil, fmt.Errorf("sock_diag: no answer for socket %d", ino)
}

func parseUnixDiag(b []byte) (*UnixSocket, error) {
	if len(b) < unixDiagMsgLength {
		return nil, fmt.Errorf("sock_diag: short answer")
	}
	s := &UnixSocket{Type: int(b[1]), State: int(b[2]), Ino: binary.LittleEndian.Uint32(b[4:])}
	for a := b[unixDiagMsgLength:]; len(a) >= 4; {
		l, typ := int(binary.LittleEndian.Uint16(a)), binary.LittleEndian.Uint16(a[2:])
		if l < 4 || l > len(a) {
			return nil, fmt.Errorf("sock_diag: bad attribute")
		}
		v := a[4:l]
		switch typ {
		case unixDiagName:
			if len(v) > 0 && v[0] == 0 {
				s.Name = "@" + string(v[1:])
			} else {
				// A path may come with its terminating NUL (bound with sizeof the address).
				if i := bytes.IndexByte(v, 0); i >= 0 {
					v = v[:i]
				}
				s.Name = string(v)
			}
		case unixDiagVfs:
			if len(v) >= 8 {
				s.VfsIno, s.VfsDev = binary.LittleEndian.Uint32(v), binary.LittleEndian.Uint32(v[4:])
			}
		case unixDiagPeer:
			if len(v) >= 4 {
				s.Peer = binary.LittleEndian.Uint32(v)
			}
		case unixDiagRqlen:
			if len(v) >= 8 {
				s.RQueue, s.WQueue = binary.LittleEndian.Uint32(v), binary.LittleEndian.Uint32(v[4:])
			}
		case unixDiagIcons:
			for i := 0; i+4 <= len(v); i += 4 {
				s.Icons = append(s.Icons, binary.LittleEndian.Uint32(v[i:]))
			}
		case unixDiagShutdown:
			if len(v) >= 1 {
				s.Shutdown = v[0]
			}
		}
		a = a[(l+3)&^3:]
	}
	return s, nil
}

// PeekQueue returns the messages queued on a socket without taking them: each datagram
// (or, for a stream, the whole byte stream) in order, and the fds each carries (SCM_RIGHTS:
// new fds of gocr's, close-on-exec, for the caller to close). It uses SO_PEEK_OFF and puts
// the old value back. Fds in a stream's queue make it fail with ErrQueuedFds (where they are
// in the byte stream is not kept).
func PeekQueue(fd int) ([][]byte, [][]int, error) {
	old, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return nil, nil, os.NewSyscallError("getsockopt(SO_PEEK_OFF)", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return nil, nil, os.NewSyscallError("setsockopt(SO_PEEK_OFF)", err)
	}
	defer unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, old)
	typ, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	var out [][]byte
	var rights [][]int
	fail := func(err error) ([][]byte, [][]int, error) {
		for _, fds := range rights {
			for _, f := range fds {
				unix.Close(f)
			}
		}
		return nil, nil, err
	}
	buf := make([]byte, 1<<20)
	oob := make([]byte, unix.CmsgSpace(253*4)) // SCM_MAX_FD
	for {
		n, oobn, flags, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_PEEK|unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
		if err == unix.EAGAIN || (err == nil && n == 0 && oobn == 0) {
			return out, rights, nil
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fail(os.NewSyscallError("recvmsg(MSG_PEEK)", err))
		}
		var fds []int
		if oobn > 0 {
			if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, cm := range cms {
					if got, err := unix.ParseUnixRights(&cm); err == nil {
						fds = append(fds, got...)
					}
				}
			}
		}
		rights = append(rights, fds)
		if len(fds) > 0 && typ == unix.SOCK_STREAM {
			return fail(ErrQueuedFds)
		}
		if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
			return fail(fmt.Errorf("a queued message is larger than %d bytes, or carries more than 253 fds", len(buf)))
		}
		out = append(out, append([]byte(nil), buf[:n]...))
	}
}

// SendRights sends one message with fds (SCM_RIGHTS) on a connected socket, or to the socket
// bound at name when it is not "".
func SendRights(fd int, name string, b []byte, fds []int) error {
	var to unix.Sockaddr
	if name != "" {
		to = unixAddr(name)
	}
	for {
		err := unix.Sendmsg(fd, b, unix.UnixRights(fds...), to, unix.MSG_DONTWAIT)
		if err == unix.EINTR {
			continue
		}
		return os.NewSyscallError("sendmsg(SCM_RIGHTS)", err)
	}
}

// ErrQueuedFds means file descriptors are in flight in a stream socket's queue.
var ErrQueuedFds = fmt.Errorf("file descriptors in flight (SCM_RIGHTS) in a stream")

// Socketpair makes a connected pair of unix sockets of type typ (close-on-exec).
func Socketpair(typ int) (int, int, error) {
	p, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, -1, os.NewSyscallError("socketpair", err)
	}
	return p[0], p[1], nil
}

// UnixListen makes a unix socket bound to name (a path, or '@' for an abstract name), and
// listening with backlog unless backlog < 0.
func UnixListen(typ int, name string, backlog int) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if name != "" {
		sa := &unix.SockaddrUnix{Name: name}
		if name[0] == '@' {
			sa.Name = "\x00" + name[1:]
		}
		if err := unix.Bind(fd, sa); err != nil {
			unix.Close(fd)
			return -1, &os.PathError{Op: "bind", Path: name, Err: err}
		}
	}
	if backlog >= 0 {
		if err := unix.Listen(fd, backlog); err != nil {
			unix.Close(fd)
			return -1, os.NewSyscallError("listen", err)
		}
	}
	return fd, nil
}

// unixAddr is the address of a unix socket name (a path, or '@' for an abstract name).
func unixAddr(name string) *unix.SockaddrUnix {
	if name != "" && name[0] == '@' {
		return &unix.SockaddrUnix{Name: "\x00" + name[1:]}
	}
	return &unix.SockaddrUnix{Name: name}
}

// UnixConnect connects a unix socket to the socket bound at name.
func UnixConnect(fd int, name string) error {
	for {
		err := unix.Connect(fd, unixAddr(name))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "connect", Path: name, Err: err}
		}
		return nil
	}
}

// SendTo sends one datagram from an unbound datagram socket to the socket bound at name.
func SendTo(fd int, name string, b []byte) error {
	for {
		err := unix.Sendto(fd, b, unix.MSG_DONTWAIT, unixAddr(name))
		if err == unix.EINTR {
			continue
		}
		return os.NewSyscallError("sendto "+name, err)
	}
}

// Send sends one message on a connected socket.
func Send(fd int, b []byte) error {
	for {
		err := unix.Send(fd, b, unix.MSG_DONTWAIT)
		if err == unix.EINTR {
			continue
		}
		return os.NewSyscallError("send", err)
	}
}

// Shutdown shuts down part of a socket: how is SHUT_RD (0), SHUT_WR (1) or SHUT_RDWR (2).
func Shutdown(fd, how int) error { return os.NewSyscallError("shutdown", unix.Shutdown(fd, how)) }

// Socket types.
const (
	SockStream    = unix.SOCK_STREAM
	SockDgram     = unix.SOCK_DGRAM
	SockSeqpacket = unix.SOCK_SEQPACKET
)

// inetDiagReq is struct inet_diag_req_v2 (linux/inet_diag.h), 56 bytes: the socket id is
// left zero, as a dump of every socket wants it.
type inetDiagReq struct {
	Family   uint8
	Protocol uint8
	Ext      uint8
	_        uint8
	States   uint32
	ID       [48]byte
}

// What inet_diag answers: struct inet_diag_msg, 72 bytes (the inode at 68), then attributes.
const (
	inetDiagMsgLength = 72
	inetDiagShutdown  = 8
)

// InetDiag is what sock_diag tells of a TCP or UDP socket that getsockopt and getpeername do
// not: how it is shut down (RCV_SHUTDOWN 1 | SEND_SHUTDOWN 2) and the peer of a connection
// not established yet (SYN_SENT: getpeername says ENOTCONN).
type InetDiag struct {
	Shutdown uint8
	Peer     netip.AddrPort
}

// InetDiags gives, by inode, what sock_diag tells of every TCP or UDP socket of the family
// and protocol in this network namespace.
func InetDiags(family, protocol int) (map[uint32]InetDiag, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, os.NewSyscallError("socket(NETLINK_SOCK_DIAG)", err)
	}
	defer unix.Close(fd)
	req := inetDiagReq{Family: uint8(family), Protocol: uint8(protocol), States: ^uint32(0)}
	msg := make([]byte, unix.NLMSG_HDRLEN+int(unsafe.Sizeof(req)))
	binary.LittleEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.LittleEndian.PutUint16(msg[4:], sockDiagByFamily)
	binary.LittleEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	copy(msg[unix.NLMSG_HDRLEN:], unsafe.Slice((*byte)(unsafe.Pointer(&req)), unsafe.Sizeof(req)))
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, os.NewSyscallError("sendto(sock_diag)", err)
	}
	out := map[uint32]InetDiag{}
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, os.NewSyscallError("recvfrom(sock_diag)", err)
		}
		for b := buf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
			l, typ := int(binary.LittleEndian.Uint32(b)), binary.LittleEndian.Uint16(b[4:])
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return nil, fmt.Errorf("sock_diag: bad answer")
			}
			data := b[unix.NLMSG_HDRLEN:l]
			switch typ {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(data) >= 4 {
					if e := int32(binary.LittleEndian.Uint32(data)); e != 0 {
						return nil, os.NewSyscallError("sock_diag", unix.Errno(-e))
					}
				}
			default:
				if len(data) < inetDiagMsgLength {
					return nil, fmt.Errorf("sock_diag: short answer")
				}
				ino := binary.LittleEndian.Uint32(data[68:])
				// struct inet_diag_sockid at 4: sport, dport (big endian), src[16], dst[16].
				var d InetDiag
				port := binary.BigEndian.Uint16(data[6:])
				if family == unix.AF_INET {
					d.Peer = netip.AddrPortFrom(netip.AddrFrom4([4]byte(data[24:28])), port)
				} else {
					d.Peer = netip.AddrPortFrom(netip.AddrFrom16([16]byte(data[24:40])), port)
				}
				for a := data[inetDiagMsgLength:]; len(a) >= 4; {
					al, at := int(binary.LittleEndian.Uint16(a)), binary.LittleEndian.Uint16(a[2:])
					if al < 4 || al > len(a) {
						return nil, fmt.Errorf("sock_diag: bad attribute")
					}
					if at == inetDiagShutdown && al >= 5 {
						d.Shutdown = a[4]
					}
					a = a[min((al+3)&^3, len(a)):]
				}
				out[ino] = d
			}
			b = b[min((l+3)&^3, len(b)):]
		}
	}
}
