package core

import (
	"net/netip"

	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/linux"
)

// inetToImage is the image's record of a TCP or UDP socket (its connection state aside).
func inetToImage(s *linux.InetSocket) *imagepb.InetSocket {
	in := &imagepb.InetSocket{Family: int32(s.Family), Type: int32(s.Type), Protocol: int32(s.Protocol), State: int32(s.State),
		Backlog: s.Backlog, Options: map[string]int32{}, RcvTimeoutUs: s.RcvTimeo, SndTimeoutUs: s.SndTimeo,
		BindDevice: s.BindDevice, Shutdown: uint32(s.Shutdown), Congestion: s.Congestion, Filter: s.Filter}
	if s.Local.IsValid() {
		in.Local = s.Local.String()
	}
	if s.Peer.IsValid() {
		in.Peer = s.Peer.String()
	}
	for k, v := range s.Opts {
		in.Options[k] = int32(v)
	}
	if s.Linger != nil {
		in.LingerOn, in.LingerSeconds = true, *s.Linger
	}
	return in
}

// inetFromImage is the socket an image records, to be made again (a validated image).
func inetFromImage(in *imagepb.InetSocket) (*linux.InetSocket, error) {
	s := &linux.InetSocket{Family: int(in.Family), Type: int(in.Type), Protocol: int(in.Protocol), State: int(in.State),
		Backlog: in.Backlog, Opts: map[string]int{}, RcvTimeo: in.RcvTimeoutUs, SndTimeo: in.SndTimeoutUs,
		BindDevice: in.BindDevice, Shutdown: uint8(in.Shutdown), Congestion: in.Congestion, Filter: in.Filter}
	var err error
	if in.Local != "" {
		if s.Local, err = netip.ParseAddrPort(in.Local); err != nil {
			return nil, err
		}
	}
	if in.Peer != "" {
		if s.Peer, err = netip.ParseAddrPort(in.Peer); err != nil {
			return nil, err
		}
	}
	for k, v := range in.Options {
		s.Opts[k] = int(v)
	}
	if in.LingerOn {
		s.Linger = &in.LingerSeconds
	}
	return s, nil
}
