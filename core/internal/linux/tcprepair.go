package linux

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TCP repair (linux/tcp.h): how a connection is taken out of a socket and put into another
// without a packet on the wire. It needs CAP_NET_ADMIN.
const (
	tcpRepair        = 19
	tcpRepairQueue   = 20
	tcpQueueSeq      = 21
	tcpRepairOptions = 22
	tcpTimestamp     = 24
	tcpRepairWindow  = 29

	tcpRecvQueue = 1
	tcpSendQueue = 2

	tcpoptMSS       = 2
	tcpoptWindow    = 3
	tcpoptSackPerm  = 4
	tcpoptTimestamp = 8

	tcpiOptTimestamps = 1
	tcpiOptSack       = 2
	tcpiOptWscale     = 4
)

// TCPRepairWindow is struct tcp_repair_window (linux/tcp.h), 20 bytes.
type TCPRepairWindow struct {
	SndWl1, SndWnd, MaxWindow, RcvWnd, RcvWup uint32
}

// TCPConn is the state of an established TCP connection, taken in repair mode.
type TCPConn struct {
	SendSeq, RecvSeq     uint32 // sequence numbers after the queues (write_seq, rcv_nxt)
	SendQueue            []byte // sent-but-unacked and unsent bytes
	RecvQueue            []byte // received bytes the process has not read
	MSS                  uint32
	SndWscale, RcvWscale uint8
	Timestamps, Sack     bool
	TSVal                uint32
	Window               TCPRepairWindow
}

func setRepair(fd int, on int) error {
	return os.NewSyscallError("setsockopt(TCP_REPAIR)", unix.SetsockoptInt(fd, unix.IPPROTO_TCP, tcpRepair, on))
}

// TCPRepairOff takes a socket out of repair mode, sending a window probe to the peer.
func TCPRepairOff(fd int) error { return setRepair(fd, 0) }

// TCPRepairOffQuiet takes a socket out of repair mode without a packet (TCP_REPAIR_OFF_NO_WP):
// for the sockets of a dump that let the processes go on, whose peer may still be in repair
// mode (a probe arriving then breaks the connection).
func TCPRepairOffQuiet(fd int) error {
	if err := setRepair(fd, -1); err == nil {
		return nil
	}
	return setRepair(fd, 0) // kernels before 4.19
}

// TCP states of half-closed connections (include/net/tcp_states.h).
const (
	TCPFinWait1  = 4
	TCPFinWait2  = 5
	TCPCloseWait = 8
)

// TCPDumpConn puts the socket into repair mode (it stays there: closing it then sends
// nothing to the peer; TCPRepairOff lets it go on) and reads its connection state.
func TCPDumpConn(fd int) (*TCPConn, error) {
	if err := setRepair(fd, 1); err != nil {
		return nil, err
	}
	c := &TCPConn{}
	var err error
	for _, q := range []struct {
		id   int
		seq  *uint32
		data *[]byte
		ioc  uint
	}{{tcpSendQueue, &c.SendSeq, &c.SendQueue, unix.SIOCOUTQ}, {tcpRecvQueue, &c.RecvSeq, &c.RecvQueue, unix.SIOCINQ}} {
		if err = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, tcpRepairQueue, q.id); err != nil {
			return nil, os.NewSyscallError("setsockopt(TCP_REPAIR_QUEUE)", err)
		}
		seq, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, tcpQueueSeq)
		if err != nil {
			return nil, os.NewSyscallError("getsockopt(TCP_QUEUE_SEQ)", err)
		}
		*q.seq = uint32(seq)
		n, err := unix.IoctlGetInt(fd, q.ioc)
		if err != nil {
			return nil, os.NewSyscallError("ioctl(SIOCINQ/SIOCOUTQ)", err)
		}
		if n > 0 {
			buf := make([]byte, n)
			got, _, err := unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
			if err != nil {
				return nil, os.NewSyscallError("recv(MSG_PEEK) in repair mode", err)
			}
			*q.data = buf[:got]
		}
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, tcpRepairQueue, 0); err != nil {
		return nil, os.NewSyscallError("setsockopt(TCP_REPAIR_QUEUE)", err)
	}
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return nil, os.NewSyscallError("getsockopt(TCP_INFO)", err)
	}
	c.Timestamps = info.Options&tcpiOptTimestamps != 0
	c.Sack = info.Options&tcpiOptSack != 0
	if info.Options&tcpiOptWscale != 0 {
		// tcpi_snd_wscale : 4, tcpi_rcv_wscale : 4 share one byte after tcpi_options.
		b := *(*uint8)(unsafe.Add(unsafe.Pointer(info), unsafe.Offsetof(info.Options)+1))
		c.SndWscale, c.RcvWscale = b&0xf, b>>4
	}
	mss, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_MAXSEG)
	if err != nil {
		return nil, os.NewSyscallError("getsockopt(TCP_MAXSEG)", err)
	}
	c.MSS = uint32(mss)
	if c.Timestamps {
		ts, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, tcpTimestamp)
		if err != nil {
			return nil, os.NewSyscallError("getsockopt(TCP_TIMESTAMP)", err)
		}
		c.TSVal = uint32(ts)
	}
	l := uint32(unsafe.Sizeof(c.Window))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, tcpRepairWindow,
		uintptr(unsafe.Pointer(&c.Window)), uintptr(unsafe.Pointer(&l)), 0); e != 0 {
		return nil, os.NewSyscallError("getsockopt(TCP_REPAIR_WINDOW)", e)
	}
	return c, nil
}

// TCPRestoreConn makes an established connection from local to peer with the state c, without
// a packet on the wire, and returns its fd (close-on-exec). The socket is left in repair mode:
// take it out with TCPRepairOff once its peer exists too, or the first packet it sends would
// be answered with a reset.
func TCPRestoreConn(family int, local, peer unix.Sockaddr, c *TCPConn, opts func(fd int) error) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	fail := func(err error) (int, error) {
		unix.Close(fd)
		return -1, err
	}
	// Options first: repair mode sets SO_REUSEADDR to its own "force" value, which lets the
	// connection bind the port its listener holds; setting SO_REUSEADDR after would undo it.
	if opts != nil {
		if err := opts(fd); err != nil {
			return fail(err)
		}
	}
	if err := setRepair(fd, 1); err != nil {
		return fail(err)
	}
	for _, q := range []struct {
		id  int
		seq uint32
	}{{tcpSendQueue, c.SendSeq - uint32(len(c.SendQueue))}, {tcpRecvQueue, c.RecvSeq - uint32(len(c.RecvQueue))}} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, tcpRepairQueue, q.id); err != nil {
			return fail(os.NewSyscallError("setsockopt(TCP_REPAIR_QUEUE)", err))
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, tcpQueueSeq, int(q.seq)); err != nil {
			return fail(os.NewSyscallError("setsockopt(TCP_QUEUE_SEQ)", err))
		}
	}
	if err := unix.Bind(fd, local); err != nil {
		return fail(fmt.Errorf("bind: %w", err))
	}
	if err := unix.Connect(fd, peer); err != nil {
		return fail(fmt.Errorf("connect in repair mode: %w", err))
	}
	type repairOpt struct{ Code, Val uint32 }
	ropts := []repairOpt{{tcpoptMSS, c.MSS}}
	if c.SndWscale != 0 || c.RcvWscale != 0 {
		ropts = append(ropts, repairOpt{tcpoptWindow, uint32(c.SndWscale) | uint32(c.RcvWscale)<<16})
	}
	if c.Sack {
		ropts = append(ropts, repairOpt{tcpoptSackPerm, 0})
	}
	if c.Timestamps {
		ropts = append(ropts, repairOpt{tcpoptTimestamp, 0})
	}
	if _, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, tcpRepairOptions,
		uintptr(unsafe.Pointer(&ropts[0])), uintptr(len(ropts))*8, 0); e != 0 {
		return fail(os.NewSyscallError("setsockopt(TCP_REPAIR_OPTIONS)", e))
	}
	if c.Timestamps {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, tcpTimestamp, int(c.TSVal)); err != nil {
			return fail(os.NewSyscallError("setsockopt(TCP_TIMESTAMP)", err))
		}
	}
	for _, q := range []struct {
		id   int
		data []byte
	}{{tcpRecvQueue, c.RecvQueue}, {tcpSendQueue, c.SendQueue}} {
		if len(q.data) == 0 {
			continue
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, tcpRepairQueue, q.id); err != nil {
			return fail(os.NewSyscallError("setsockopt(TCP_REPAIR_QUEUE)", err))
		}
		for off := 0; off < len(q.data); {
			n, err := unix.SendmsgN(fd, q.data[off:], nil, nil, 0)
			if err != nil {
				return fail(os.NewSyscallError("send in repair mode", err))
			}
			off += n
		}
	}
	if _, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, tcpRepairWindow,
		uintptr(unsafe.Pointer(&c.Window)), unsafe.Sizeof(c.Window), 0); e != 0 {
		return fail(os.NewSyscallError("setsockopt(TCP_REPAIR_WINDOW)", e))
	}
	return fd, nil
}

// InjectFIN makes a restored TCP connection get the FIN its peer had sent before the dump:
// a FIN|ACK from peer to local, crafted with a raw socket, with the sequence number the
// connection expects (seq), acknowledging up to ack, advertising window (already scaled
// down). Linux takes it as the peer's FIN: the socket goes to CLOSE_WAIT and reads
// end-of-file after its queue, as before; it acknowledges it to the real peer, which had its
// acknowledgement already.
func InjectFIN(local, peer netip.AddrPort, seq, ack uint32, window uint16) error {
	v4 := local.Addr().Unmap().Is4() && peer.Addr().Unmap().Is4()
	family, hdr := unix.AF_INET6, 40
	if v4 {
		family, hdr = unix.AF_INET, 20
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return os.NewSyscallError("socket(SOCK_RAW)", err)
	}
	defer unix.Close(fd)
	p := make([]byte, hdr+20)
	var src, dst []byte
	var to unix.Sockaddr
	if v4 {
		s4, d4 := peer.Addr().Unmap().As4(), local.Addr().Unmap().As4()
		src, dst = s4[:], d4[:]
		// IPv4 header: the kernel fills in the total length, id and checksum.
		p[0], p[8], p[9] = 0x45, 64, unix.IPPROTO_TCP
		binary.BigEndian.PutUint16(p[6:], 0x4000) // don't fragment
		copy(p[12:16], src)
		copy(p[16:20], dst)
		to = &unix.SockaddrInet4{Addr: d4}
	} else {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_HDRINCL, 1); err != nil {
			return os.NewSyscallError("setsockopt(IPV6_HDRINCL)", err)
		}
		s6, d6 := peer.Addr().As16(), local.Addr().As16()
		src, dst = s6[:], d6[:]
		// IPv6 header: version 6, payload length, next header TCP, hop limit.
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:], 20)
		p[6], p[7] = unix.IPPROTO_TCP, 64
		copy(p[8:24], src)
		copy(p[24:40], dst)
		to = &unix.SockaddrInet6{Addr: d6}
	}
	t := p[hdr:]
	binary.BigEndian.PutUint16(t[0:], peer.Port())
	binary.BigEndian.PutUint16(t[2:], local.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12], t[13] = 5<<4, 0x11 // header of 20 bytes; FIN, ACK
	binary.BigEndian.PutUint16(t[14:], window)
	// The TCP checksum covers a pseudo-header: addresses, protocol, TCP length.
	sum := uint32(0)
	for _, b := range [][]byte{src, dst, {0, unix.IPPROTO_TCP, 0, 20}, t} {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(t[16:], ^uint16(sum))
	if err := unix.Sendto(fd, p, 0, to); err != nil {
		return os.NewSyscallError("sendto(SOCK_RAW)", err)
	}
	return nil
}
