package linux

import (
	"fmt"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PtyState is what a pty master tells of its pair's terminal.
type PtyState struct {
	Index      int
	Termios    []byte
	Rows, Cols uint16
	Locked     bool
	Packet     bool
	// Slave is the owner and mode of the slave's /dev/pts entry, when it was read.
	Slave *PtsOwner
}

// PtsOwner is who owns a /dev/pts entry, and its permission bits.
type PtsOwner struct{ Uid, Gid, Mode uint32 }

// InspectPtyMaster reads a pty master: its index, and the termios, window size, lock and
// packet mode of its terminal (termios ioctls on a master act on the slave).
func InspectPtyMaster(fd int) (*PtyState, error) {
	idx, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		return nil, os.NewSyscallError("ioctl(TIOCGPTN)", err)
	}
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, os.NewSyscallError("ioctl(TCGETS)", err)
	}
	ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
	if err != nil {
		return nil, os.NewSyscallError("ioctl(TIOCGWINSZ)", err)
	}
	s := &PtyState{Index: int(idx), Termios: append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(t)), unsafe.Sizeof(*t))...),
		Rows: ws.Row, Cols: ws.Col}
	if v, err := unix.IoctlGetInt(fd, unix.TIOCGPTLCK); err == nil {
		s.Locked = v != 0
	}
	if v, err := unix.IoctlGetInt(fd, unix.TIOCGPKT); err == nil {
		s.Packet = v != 0
	}
	// The entry in gocr's /dev/pts, when it is this pty's (a container may have its own).
	var st unix.Stat_t
	if unix.Stat(PtsPath(s.Index), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR && isPtsDevice(st.Rdev, s.Index) {
		s.Slave = &PtsOwner{Uid: st.Uid, Gid: st.Gid, Mode: st.Mode & 0o7777}
	}
	return s, nil
}

// isPtsDevice says whether rdev is pty slave index (Unix98 ptys: majors 136 to 143).
func isPtsDevice(rdev uint64, index int) bool {
	major, minor := unix.Major(rdev), unix.Minor(rdev)
	return major >= 136 && major <= 143 && int((major-136)*256+minor) == index
}

// SetPtsOwner gives the slave entry of pty index its owner and mode.
func SetPtsOwner(index int, o *PtsOwner) error {
	if err := unix.Chown(PtsPath(index), int(o.Uid), int(o.Gid)); err != nil {
		return &os.PathError{Op: "chown", Path: PtsPath(index), Err: err}
	}
	if err := unix.Chmod(PtsPath(index), o.Mode&0o7777); err != nil {
		return &os.PathError{Op: "chmod", Path: PtsPath(index), Err: err}
	}
	return nil
}

// OpenPtyMaster opens /dev/ptmx until it gets the pty with index want (holding the others
// meanwhile, then closing them), and sets its terminal as s says. It fails when that index
// is taken.
func OpenPtyMaster(s *PtyState, flags int) (int, error) {
	var held []int
	defer func() {
		for _, fd := range held {
			unix.Close(fd)
		}
	}()
	for {
		fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|flags&unix.O_NONBLOCK, 0)
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: "/dev/ptmx", Err: err}
		}
		idx, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
		if err != nil {
			unix.Close(fd)
			return -1, os.NewSyscallError("ioctl(TIOCGPTN)", err)
		}
		switch {
		case int(idx) == s.Index:
			return fd, setPty(fd, s)
		case int(idx) > s.Index:
			unix.Close(fd)
			return -1, fmt.Errorf("pty %d is taken (/dev/pts/%d exists)", s.Index, s.Index)
		}
		held = append(held, fd)
		if len(held) > 4096 {
			return -1, fmt.Errorf("pty %d: too many ptys below it", s.Index)
		}
	}
}

func setPty(fd int, s *PtyState) error {
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		return os.NewSyscallError("ioctl(TIOCSPTLCK)", err)
	}
	var t unix.Termios
	if len(s.Termios) == int(unsafe.Sizeof(t)) {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&t)), unsafe.Sizeof(t)), s.Termios)
		if err := unix.IoctlSetTermios(fd, unix.TCSETS, &t); err != nil {
			return os.NewSyscallError("ioctl(TCSETS)", err)
		}
	}
	if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: s.Rows, Col: s.Cols}); err != nil {
		return os.NewSyscallError("ioctl(TIOCSWINSZ)", err)
	}
	if s.Packet {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCPKT, 1); err != nil {
			return os.NewSyscallError("ioctl(TIOCPKT)", err)
		}
	}
	if s.Locked {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 1); err != nil {
			return os.NewSyscallError("ioctl(TIOCSPTLCK)", err)
		}
	}
	return nil
}

// PtsPath is the slave path of pty index.
func PtsPath(index int) string { return "/dev/pts/" + strconv.Itoa(index) }

// Ioctl numbers injected to give a restored session its terminal back.
const (
	SysIoctl  = unix.SYS_IOCTL
	TIOCSCTTY = unix.TIOCSCTTY
	TIOCSPGRP = unix.TIOCSPGRP
)

// HungUpPtySlave gives a pty slave whose master is closed, as a process holds one after its
// terminal went away: a read gives end-of-file, a write fails with EIO. (Another pty index than the dumped one:
// that one is gone.)
func HungUpPtySlave(flags int) (int, error) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: "/dev/ptmx", Err: err}
	}
	defer unix.Close(m)
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		return -1, os.NewSyscallError("ioctl(TIOCSPTLCK)", err)
	}
	idx, err := unix.IoctlGetUint32(m, unix.TIOCGPTN)
	if err != nil {
		return -1, os.NewSyscallError("ioctl(TIOCGPTN)", err)
	}
	return Open(PtsPath(int(idx)), flags|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
}
