package linux

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// tfdIocSetTicks is TFD_IOC_SET_TICKS, _IOW('T', 0, u64) (linux/timerfd.h).
const tfdIocSetTicks = 0x40085400

// Timerfd makes a timerfd on clockid armed to expire in valueNs and then every intervalNs,
// with ticks expirations not read yet (close-on-exec).
func Timerfd(clockid int, flags int, valueNs, intervalNs int64, ticks uint64) (int, error) {
	fd, err := unix.TimerfdCreate(clockid, unix.TFD_CLOEXEC|flags&unix.TFD_NONBLOCK)
	if err != nil {
		return -1, os.NewSyscallError("timerfd_create", err)
	}
	its := unix.ItimerSpec{Interval: unix.NsecToTimespec(intervalNs), Value: unix.NsecToTimespec(valueNs)}
	if err := unix.TimerfdSettime(fd, 0, &its, nil); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("timerfd_settime", err)
	}
	if ticks > 0 {
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), tfdIocSetTicks, uintptr(unsafe.Pointer(&ticks))); e != 0 {
			unix.Close(fd)
			return -1, os.NewSyscallError("ioctl(TFD_IOC_SET_TICKS)", e)
		}
	}
	return fd, nil
}

// Signalfd makes a signalfd reading the signals of mask (close-on-exec).
func Signalfd(mask uint64, flags int) (int, error) {
	set := unix.Sigset_t{Val: [16]uint64{mask}}
	fd, err := unix.Signalfd(-1, &set, unix.SFD_CLOEXEC|flags&unix.SFD_NONBLOCK)
	return fd, os.NewSyscallError("signalfd4", err)
}

// InotifyInit makes an inotify instance (close-on-exec).
func InotifyInit(flags int) (int, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | flags&unix.IN_NONBLOCK)
	return fd, os.NewSyscallError("inotify_init1", err)
}

// InotifyAddWatch adds a watch and returns its descriptor.
func InotifyAddWatch(fd int, path string, mask uint32) (int, error) {
	wd, err := unix.InotifyAddWatch(fd, path, mask)
	if err != nil {
		return -1, &os.PathError{Op: "inotify_add_watch", Path: path, Err: err}
	}
	return wd, nil
}

// InotifyRmWatch removes a watch.
func InotifyRmWatch(fd, wd int) error {
	_, err := unix.InotifyRmWatch(fd, uint32(wd))
	return os.NewSyscallError("inotify_rm_watch", err)
}

// WatchPath finds the path of the file an inotify watch is on, from the file handle and the
// device (the kernel's major << 20 | minor) its fdinfo gives: a mount of that device is found
// in mountinfo and the handle opened there (open_by_handle_at, CAP_DAC_READ_SEARCH).
func WatchPath(sdev uint64, handleType int, handle []byte) (string, error) {
	major, minor := sdev>>20, sdev&0xfffff
	mnt, err := mountOf(major, minor)
	if err != nil {
		return "", err
	}
	mfd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", &os.PathError{Op: "open", Path: mnt, Err: err}
	}
	defer unix.Close(mfd)
	fh := unix.NewFileHandle(int32(handleType), handle)
	fd, err := unix.OpenByHandleAt(mfd, fh, unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return "", os.NewSyscallError("open_by_handle_at", err)
	}
	defer unix.Close(fd)
	return os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
}

// mountOf returns a mount point of the device major:minor from /proc/self/mountinfo.
func mountOf(major, minor uint64) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	want := fmt.Sprintf("%d:%d", major, minor)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 4 && fs[2] == want {
			return fs[4], nil
		}
	}
	return "", fmt.Errorf("no mount of device %s", want)
}

// Memfd makes a memfd named name (close-on-exec), has fill write its content, mode and owner,
// and then adds seals: F_SEAL_EXEC on a memfd still executable would add the write seals.
func Memfd(name string, seals int, fill func(fd int) error) (int, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, os.NewSyscallError("memfd_create", err)
	}
	if err := fill(fd); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if seals != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
			unix.Close(fd)
			return -1, os.NewSyscallError("fcntl(F_ADD_SEALS)", err)
		}
	}
	return fd, nil
}

// Seals returns a memfd's seals (F_GET_SEALS).
func Seals(fd int) (int, error) {
	s, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	return s, os.NewSyscallError("fcntl(F_GET_SEALS)", err)
}
