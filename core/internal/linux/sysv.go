package linux

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ShmInfo is what IPC_STAT tells of a System V shared memory segment.
type ShmInfo struct {
	Key      int32
	Size     uint64
	Mode     uint32 // permissions, and SHM_DEST (01000) once removed
	Uid, Gid uint32
}

// ShmDest is set in ShmInfo.Mode for a segment removed while still attached.
const ShmDest = 0o1000

// ShmStat reads a segment's key, size, mode and owner (IPC_STAT).
func ShmStat(id int) (*ShmInfo, error) {
	var d unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &d); err != nil {
		return nil, os.NewSyscallError("shmctl(IPC_STAT)", err)
	}
	return &ShmInfo{Key: d.Perm.Key, Size: d.Segsz, Mode: d.Perm.Mode, Uid: d.Perm.Uid, Gid: d.Perm.Gid}, nil
}

// ShmCreate makes a segment with the given id (through /proc/sys/kernel/shm_next_id, a
// CONFIG_CHECKPOINT_RESTORE knob), key, size and owner, filled by fill.
func ShmCreate(id int, info *ShmInfo, fill func(mem []byte) error) error {
	if err := os.WriteFile("/proc/sys/kernel/shm_next_id", []byte(strconv.Itoa(id)), 0); err != nil {
		return fmt.Errorf("choose System V shm id %d: %w", id, err)
	}
	got, err := unix.SysvShmGet(int(info.Key), int(info.Size), unix.IPC_CREAT|unix.IPC_EXCL|int(info.Mode&0o777))
	if err != nil {
		return fmt.Errorf("make System V shm %d (key %#x): %w", id, info.Key, err)
	}
	if got != id {
		unix.SysvShmCtl(got, unix.IPC_RMID, nil)
		return fmt.Errorf("make System V shm %d: got id %d", id, got)
	}
	fail := func(err error) error {
		unix.SysvShmCtl(id, unix.IPC_RMID, nil)
		return err
	}
	mem, err := unix.SysvShmAttach(id, 0, 0)
	if err != nil {
		return fail(os.NewSyscallError("shmat", err))
	}
	err = fill(mem)
	unix.SysvShmDetach(mem)
	if err != nil {
		return fail(err)
	}
	var d unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &d); err != nil {
		return fail(os.NewSyscallError("shmctl(IPC_STAT)", err))
	}
	d.Perm.Uid, d.Perm.Gid, d.Perm.Mode = info.Uid, info.Gid, info.Mode&0o777
	if _, err := unix.SysvShmCtl(id, unix.IPC_SET, &d); err != nil {
		return fail(os.NewSyscallError("shmctl(IPC_SET)", err))
	}
	return nil
}

// ShmRemove marks a segment for removal (IPC_RMID): it goes when the last process detaches.
func ShmRemove(id int) error {
	_, err := unix.SysvShmCtl(id, unix.IPC_RMID, nil)
	return os.NewSyscallError("shmctl(IPC_RMID)", err)
}

// SysShmat and ShmRdonly are used to attach a segment inside a process.
const (
	SysShmat  = unix.SYS_SHMAT
	ShmRdonly = unix.SHM_RDONLY
)

// SysvIds are a System V object's id, key and owner.
type SysvIds struct {
	ID, Key        int32
	Mode, Uid, Gid uint32
}

// SysvList lists the ids of the System V objects of kind ("shm", "sem" or "msg") in the
// calling thread's IPC namespace (/proc/sysvipc/KIND, read as it sees it).
func SysvList(kind string) ([]int, error) {
	b, err := os.ReadFile("/proc/sysvipc/" + kind)
	if err != nil {
		return nil, err
	}
	var ids []int
	for i, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 2 {
			continue // the header
		}
		id, err := strconv.Atoi(f[1])
		if err != nil {
			return nil, fmt.Errorf("/proc/sysvipc/%s line %d: %q", kind, i+1, line)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// semid64_ds and msqid64_ds (x86_64).
type semidDs struct {
	Perm               unix.SysvIpcPerm
	Otime, _, Ctime, _ int64
	Nsems, _, _        uint64
}

type msqidDs struct {
	Perm                 unix.SysvIpcPerm
	Stime, Rtime, Ctime  int64
	Cbytes, Qnum, Qbytes uint64
	Lspid, Lrpid         int32
	_, _                 uint64
}

const (
	semGetall = 13
	semSetall = 17
	msgCopy   = 0o40000
)

func sysvCall(name string, nr uintptr, a ...uintptr) (uintptr, error) {
	for len(a) < 6 {
		a = append(a, 0)
	}
	r, _, e := unix.Syscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5])
	if e != 0 {
		return 0, os.NewSyscallError(name, e)
	}
	return r, nil
}

func idsOf(id int, p *unix.SysvIpcPerm) SysvIds {
	return SysvIds{ID: int32(id), Key: p.Key, Mode: p.Mode & 0o777, Uid: p.Uid, Gid: p.Gid}
}

// SemRead reads a semaphore set's ids and the value of each semaphore.
func SemRead(id int) (SysvIds, []uint16, error) {
	var d semidDs
	if _, err := sysvCall("semctl(IPC_STAT)", unix.SYS_SEMCTL, uintptr(id), 0, unix.IPC_STAT, uintptr(unsafe.Pointer(&d))); err != nil {
		return SysvIds{}, nil, err
	}
	vals := make([]uint16, d.Nsems)
	if len(vals) > 0 {
		if _, err := sysvCall("semctl(GETALL)", unix.SYS_SEMCTL, uintptr(id), 0, semGetall, uintptr(unsafe.Pointer(&vals[0]))); err != nil {
			return SysvIds{}, nil, err
		}
	}
	return idsOf(id, &d.Perm), vals, nil
}

// nextID makes the next System V object of kind made in this IPC namespace get id
// (/proc/sys/kernel/KIND_next_id, a CONFIG_CHECKPOINT_RESTORE knob).
func nextID(kind string, id int32) error {
	if err := os.WriteFile("/proc/sys/kernel/"+kind+"_next_id", []byte(strconv.Itoa(int(id))), 0); err != nil {
		return fmt.Errorf("choose System V %s id %d: %w", kind, id, err)
	}
	return nil
}

// setIds gives an object made with ids its owner and mode (IPC_SET of the stat it reads).
func setIds(name string, nr uintptr, id int, ids SysvIds, ds unsafe.Pointer, perm *unix.SysvIpcPerm, semctl bool) error {
	args := []uintptr{uintptr(id), unix.IPC_STAT, uintptr(ds)}
	if semctl {
		args = []uintptr{uintptr(id), 0, unix.IPC_STAT, uintptr(ds)}
	}
	if _, err := sysvCall(name+"(IPC_STAT)", nr, args...); err != nil {
		return err
	}
	perm.Uid, perm.Gid, perm.Mode = ids.Uid, ids.Gid, ids.Mode
	if semctl {
		args[2] = unix.IPC_SET
	} else {
		args[1] = unix.IPC_SET
	}
	_, err := sysvCall(name+"(IPC_SET)", nr, args...)
	return err
}

// SemCreate makes a semaphore set again with its id, key, owner and values.
func SemCreate(ids SysvIds, vals []uint16) error {
	if err := nextID("sem", ids.ID); err != nil {
		return err
	}
	got, err := sysvCall("semget", unix.SYS_SEMGET, uintptr(ids.Key), uintptr(len(vals)), uintptr(unix.IPC_CREAT|unix.IPC_EXCL|int(ids.Mode)))
	if err != nil {
		return fmt.Errorf("make System V semaphore set %d (key %#x): %w", ids.ID, ids.Key, err)
	}
	if int32(got) != ids.ID {
		sysvCall("semctl(IPC_RMID)", unix.SYS_SEMCTL, got, 0, unix.IPC_RMID)
		return fmt.Errorf("make System V semaphore set %d: got id %d", ids.ID, got)
	}
	if len(vals) > 0 {
		if _, err := sysvCall("semctl(SETALL)", unix.SYS_SEMCTL, got, 0, semSetall, uintptr(unsafe.Pointer(&vals[0]))); err != nil {
			return err
		}
	}
	var d semidDs
	return setIds("semctl", unix.SYS_SEMCTL, int(got), ids, unsafe.Pointer(&d), &d.Perm, true)
}

// Msg is one message of a System V queue.
type Msg struct {
	Type int64
	Text []byte
}

// MsgRead reads a message queue's ids, size limit and messages, oldest first, leaving them
// queued (MSG_COPY).
func MsgRead(id int) (SysvIds, uint64, []Msg, error) {
	var d msqidDs
	if _, err := sysvCall("msgctl(IPC_STAT)", unix.SYS_MSGCTL, uintptr(id), unix.IPC_STAT, uintptr(unsafe.Pointer(&d))); err != nil {
		return SysvIds{}, 0, nil, err
	}
	buf := make([]byte, 8+d.Qbytes)
	var msgs []Msg
	for i := uint64(0); i < d.Qnum; i++ {
		n, err := sysvCall("msgrcv(MSG_COPY)", unix.SYS_MSGRCV, uintptr(id), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)-8), uintptr(i), unix.IPC_NOWAIT|msgCopy)
		if err != nil {
			return SysvIds{}, 0, nil, fmt.Errorf("System V message queue %d: message %d: %w", id, i, err)
		}
		msgs = append(msgs, Msg{Type: int64(binary.LittleEndian.Uint64(buf)), Text: append([]byte(nil), buf[8:8+n]...)})
	}
	return idsOf(id, &d.Perm), d.Qbytes, msgs, nil
}

// MsgCreate makes a message queue again with its id, key, owner, size limit and messages.
func MsgCreate(ids SysvIds, qbytes uint64, msgs []Msg) error {
	if err := nextID("msg", ids.ID); err != nil {
		return err
	}
	got, err := sysvCall("msgget", unix.SYS_MSGGET, uintptr(ids.Key), uintptr(unix.IPC_CREAT|unix.IPC_EXCL|int(ids.Mode)))
	if err != nil {
		return fmt.Errorf("make System V message queue %d (key %#x): %w", ids.ID, ids.Key, err)
	}
	if int32(got) != ids.ID {
		sysvCall("msgctl(IPC_RMID)", unix.SYS_MSGCTL, got, unix.IPC_RMID, 0)
		return fmt.Errorf("make System V message queue %d: got id %d", ids.ID, got)
	}
	var d msqidDs
	if _, err := sysvCall("msgctl(IPC_STAT)", unix.SYS_MSGCTL, got, unix.IPC_STAT, uintptr(unsafe.Pointer(&d))); err != nil {
		return err
	}
	d.Qbytes = qbytes
	if _, err := sysvCall("msgctl(IPC_SET)", unix.SYS_MSGCTL, got, unix.IPC_SET, uintptr(unsafe.Pointer(&d))); err != nil {
		return fmt.Errorf("System V message queue %d: size limit %d: %w", ids.ID, qbytes, err)
	}
	for i, m := range msgs {
		b := make([]byte, 8+len(m.Text))
		binary.LittleEndian.PutUint64(b, uint64(m.Type))
		copy(b[8:], m.Text)
		if _, err := sysvCall("msgsnd", unix.SYS_MSGSND, got, uintptr(unsafe.Pointer(&b[0])), uintptr(len(m.Text)), unix.IPC_NOWAIT); err != nil {
			return fmt.Errorf("System V message queue %d: message %d: %w", ids.ID, i, err)
		}
	}
	var d2 msqidDs
	return setIds("msgctl", unix.SYS_MSGCTL, int(got), ids, unsafe.Pointer(&d2), &d2.Perm, false)
}

// ShmAttachReadOnly attaches System V segment id read-only in gocr (in the calling thread's
// IPC namespace).
func ShmAttachReadOnly(id int) ([]byte, error) {
	b, err := unix.SysvShmAttach(id, 0, unix.SHM_RDONLY)
	return b, os.NewSyscallError("shmat", err)
}

// ShmDetach detaches what ShmAttachReadOnly attached.
func ShmDetach(b []byte) error { return os.NewSyscallError("shmdt", unix.SysvShmDetach(b)) }

// AddrOf is the address of a mapping of gocr's.
func AddrOf(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }
