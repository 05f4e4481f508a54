// Package netlock keeps the packets of TCP connections from reaching their sockets while a
// dumped tree is away. Without it, a segment that arrives after the dumped sockets are gone
// (a delayed ACK, a keepalive, new data) meets no socket, the kernel answers with a reset, and
// the peer's end of the connection dies before the restore: CRIU's "network lock".
//
// The lock is an nftables table of gocr's own, with one rule per connection that drops what
// comes in for it, before connection tracking sees it; the peer retransmits once the restored
// socket is there and the table is gone.
package netlock
