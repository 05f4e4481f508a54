package core_test

import (
	"path/filepath"
	"testing"

	"github.com/gocr/gocr/internal/testutil"
)

// Workloads that each set up one piece of process state, check it themselves
// (testdata/workloads/include/report.h) and must find it as it was after a dump that leaves
// them running and after a dump and a restore (askTwice).
func TestRestoreExactly(t *testing.T) {
	testutil.RequireRoot(t)
	for _, c := range []struct{ name, workload string }{
		// TCP, UDP and IPv6 sockets keep the options servers set (keepalive and its timers, linger,
		// buffer sizes, TOS, TTL, reuse on a connection, a bound device, a BPF filter, timeouts...),
		// a UDP socket shut down for writing stays so, and the connection still carries bytes: after
		// a dump that leaves the tree running (repair mode must not clear SO_REUSEADDR) and after a
		// restore.
		{"SocketOptions", "sockopts"},
		// Signal-driven I/O: a pipe owned by the process with F_SETSIG, a socket owned by a thread
		// (F_SETOWN_EX), both O_ASYNC, still signal their owner when data comes, with the fd in
		// si_fd.
		{"SignalDrivenIO", "sigio"},
		// Unix sockets that need care to make again: datagram sockets connected to each other, a
		// listener whose file and directory were removed, a socket whose file was replaced by a FIFO.
		{"UnixSocketOddities", "unixodd"},
		// A listener without SO_REUSEADDR whose port its accepted connection shares comes back even
		// when the restore makes the connection first: the listener still accepts.
		{"ListenerSharingItsPort", "tcpreuse"},
		// Files in flight on unix datagram and seqpacket sockets (sent with SCM_RIGHTS, not received
		// yet, held by no fd any more: a pipe's read end with bytes in the pipe, a file at offset 3)
		// come back in flight with their messages: received after the restore, they hold what they
		// held.
		{"FdsInFlight", "scmrights"},
		// A half-closed TCP connection with both ends in the tree (one shut down for writing, in
		// FIN_WAIT2; the other in CLOSE_WAIT, its end-of-file read) comes back half-closed: the same
		// states, end-of-file one way, bytes the other.
		{"HalfClosedTCP", "tcphalf"},
		// Deleted files a process holds come back as they were: owner, mode, size, modification
		// time, holes (a sparse file's gap takes no blocks), content; a deleted file mapped shared
		// is still one with its mapping.
		{"DeletedFiles", "ghost"},
		// O_PATH fds (of a file, a directory, and with O_NOFOLLOW of a symlink), a process's own /proc
		// files, and a deleted file whose directory was removed too come back as they were.
		{"PathFds", "pathfds"},
		// memfds come back with their name, mode (0777, 0666 under MFD_NOEXEC_SEAL, or one set with
		// fchmod), owner, seals, size and content.
		{"MemfdFlags", "memfds"},
		// A private file mapping keeps its pages' relation to the file: the page the process wrote is
		// its own copy, and what the file is written with shows through the others.
		{"PrivateFileMappingPages", "cowfile"},
		// Shared anonymous memory that the first process of the tree maps only from an offset on
		// (it unmapped the start, its child did not) comes back whole and shared: the child still
		// sees the first page, and what each writes the other reads.
		{"SharedMemoryMappedAtAnOffset", "shmoff"},
		// An epoll instance watching an fd number the process no longer holds (the file lives on in a
		// dup) comes back watching the file under that number: the item still fires, with its data.
		{"EpollOfAClosedFd", "epollgone"},
		// File locks in combination: two shared flocks on two descriptions of one file; an exclusive
		// flock and an OFD lock held only through a description a child inherited; POSIX locks taken
		// through two fds of one file; flock, POSIX (parent's and child's) and two OFD read locks on
		// one file. Each is probed from new descriptions after the restore.
		{"LockCombinations", "lockcombos"},
		// A pty slave whose master was closed (its /dev/pts entry gone) comes back hung up: a read
		// gives end-of-file and a write fails with EIO, as before.
		{"HungUpPtySlave", "hungpty"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, dir := testutil.StartReady(t, c.workload)
			askTwice(t, p, filepath.Join(dir, "report"), 0)
		})
	}
}
