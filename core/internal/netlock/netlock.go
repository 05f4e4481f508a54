package netlock

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// ErrUnavailable: nftables cannot be used here (a kernel without nf_tables, no CAP_NET_ADMIN).
var ErrUnavailable = errors.New("nftables is not available")

// Conn is a TCP connection as seen from its local socket.
type Conn struct {
	Local, Peer netip.AddrPort
}

// NewName returns a name for a new lock: "gocr-" and 16 random hex digits.
func NewName() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "gocr-" + hex.EncodeToString(b)
}

// conn talks to nftables in the network namespace netns (a path such as /proc/PID/ns/net),
// or in gocr's own for "".
// The namespace's file stays open until done is called: each operation dials anew.
func conn(netns string) (c *nftables.Conn, done func(), err error) {
	if netns == "" {
		c, err = nftables.New()
		return c, func() {}, err
	}
	f, err := os.Open(netns)
	if err != nil {
		return nil, nil, err
	}
	if c, err = nftables.New(nftables.WithNetNSFd(int(f.Fd()))); err != nil {
		f.Close()
		return nil, nil, err
	}
	return c, func() { f.Close() }, nil
}

// Lock makes table name (family inet) in network namespace netns ("": gocr's) dropping every
// packet that comes in for conns.
func Lock(netns, name string, conns []Conn) error {
	c, done, err := conn(netns)
	if err != nil {
		return fmt.Errorf("network lock: %w: %w", ErrUnavailable, err)
	}
	defer done()
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name})
	policy := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRaw, Policy: &policy})
	for _, conn := range conns {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: dropIncoming(conn)})
	}
	if err := c.Flush(); err != nil {
		if errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.EPROTONOSUPPORT) || errors.Is(err, syscall.EAFNOSUPPORT) {
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return fmt.Errorf("network lock: add nftables table inet %s: %w", name, err)
	}
	return nil
}

// Unlock removes table name of network namespace netns; a table that is not there is not an
// error.
func Unlock(netns, name string) error {
	c, done, err := conn(netns)
	if err != nil {
		return fmt.Errorf("network unlock: %w", err)
	}
	defer done()
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name})
	if err := c.Flush(); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("network unlock: delete nftables table inet %s: %w", name, err)
	}
	return nil
}

// Probe says whether nftables can be used here: it lists the tables, which needs nf_tables
// and CAP_NET_ADMIN like making one does, and changes nothing.
func Probe() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	_, err = c.ListTablesOfFamily(nftables.TableFamilyINet)
	return err
}

// Held says whether table name is there.
func Held(name string) (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, err
	}
	for _, t := range tables {
		if t.Name == name {
			return true, nil
		}
	}
	return false, nil
}

const (
	nfprotoIPv4 = 2
	nfprotoIPv6 = 10
	ipprotoTCP  = 6
)

// dropIncoming matches TCP packets from conn's peer to its local end, and drops them.
func dropIncoming(conn Conn) []expr.Any {
	peer, local := conn.Peer.Addr().Unmap(), conn.Local.Addr().Unmap()
	proto, srcOff, dstOff := byte(nfprotoIPv4), uint32(12), uint32(16) // iphdr saddr, daddr
	if peer.Is6() {
		proto, srcOff, dstOff = nfprotoIPv6, 8, 24 // ipv6hdr saddr, daddr
	}
	cmp := func(data []byte) *expr.Cmp { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data} }
	load := func(base expr.PayloadBase, off uint32, n int) *expr.Payload {
		return &expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: uint32(n)}
	}
	port := func(p uint16) []byte { return []byte{byte(p >> 8), byte(p)} }
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, cmp([]byte{proto}),
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmp([]byte{ipprotoTCP}),
		load(expr.PayloadBaseNetworkHeader, srcOff, len(peer.AsSlice())), cmp(peer.AsSlice()),
		load(expr.PayloadBaseNetworkHeader, dstOff, len(local.AsSlice())), cmp(local.AsSlice()),
		load(expr.PayloadBaseTransportHeader, 0, 2), cmp(port(conn.Peer.Port())),
		load(expr.PayloadBaseTransportHeader, 2, 2), cmp(port(conn.Local.Port())),
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}
