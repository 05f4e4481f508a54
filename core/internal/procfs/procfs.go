// Package procfs reads and parses the /proc files the dumper needs. It only parses text: it
// makes no system calls besides reading files and links, and it keeps no state.
package procfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Root is where proc is mounted; tests may point it elsewhere.
var Root = "/proc"

func path(pid int, name string) string {
	return filepath.Join(Root, strconv.Itoa(pid), name)
}

// Stat is the part of /proc/PID/stat the dumper uses.
type Stat struct {
	Comm       string
	State      byte
	PPid       int
	PGid       int
	Sid        int
	TtyNr      uint64 // the controlling terminal's device number, 0 for none
	Tpgid      int    // the terminal's foreground process group
	StartCode  uint64
	EndCode    uint64
	StartStack uint64
	StartData  uint64
	EndData    uint64
	StartBrk   uint64
	ArgStart   uint64
	ArgEnd     uint64
	EnvStart   uint64
	EnvEnd     uint64
	ExitCode   int // a zombie's wait status
}

// ReadStat parses /proc/PID/stat.
func ReadStat(pid int) (*Stat, error) {
	b, err := os.ReadFile(path(pid, "stat"))
	if err != nil {
		return nil, err
	}
	return ParseStat(b)
}

// ParseStat parses the text of a /proc/PID/stat file.
func ParseStat(b []byte) (*Stat, error) {
	open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || close < open {
		return nil, fmt.Errorf("parse stat: no comm")
	}
	s := &Stat{Comm: string(b[open+1 : close])}
	f := strings.Fields(string(b[close+1:]))
	// f[0] is field 3 (state); field N is f[N-3].
	if len(f) < 49 {
		return nil, fmt.Errorf("parse stat: %d fields, want at least 51", len(f)+2)
	}
	num := func(field int) uint64 {
		v, _ := strconv.ParseUint(f[field-3], 10, 64)
		return v
	}
	s.State = f[0][0]
	s.PPid = int(num(4))
	s.PGid = int(num(5))
	s.Sid = int(num(6))
	s.TtyNr = num(7)
	s.Tpgid, _ = strconv.Atoi(f[8-3])
	s.StartCode, s.EndCode, s.StartStack = num(26), num(27), num(28)
	s.StartData, s.EndData, s.StartBrk = num(45), num(46), num(47)
	s.ArgStart, s.ArgEnd, s.EnvStart, s.EnvEnd = num(48), num(49), num(50), num(51)
	if len(f) >= 52-2 {
		s.ExitCode = int(num(52))
	}
	return s, nil
}

// Status is the part of /proc/PID/status the dumper uses.
type Status struct {
	Umask      uint32
	Threads    int
	TracerPid  int
	Uids, Gids []uint32
	Groups     []uint32
	SigIgn     uint64
	SigCgt     uint64
	CapInh     uint64
	CapPrm     uint64
	CapEff     uint64
	CapBnd     uint64
	CapAmb     uint64
	NoNewPrivs bool
	Seccomp    int // 0 none, 1 strict, 2 filter
	// NSpid is the pid in each pid namespace the process is in, as the kernel lists it:
	// the one of this /proc first, the process's own innermost last.
	NSpid []int
}

// ReadStatus parses /proc/PID/status.
func ReadStatus(pid int) (*Status, error) {
	b, err := os.ReadFile(path(pid, "status"))
	if err != nil {
		return nil, err
	}
	return ParseStatus(b), nil
}

// ParseStatus parses the text of a /proc/PID/status file.
func ParseStatus(b []byte) *Status {
	s := &Status{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		hex := func() uint64 { n, _ := strconv.ParseUint(v, 16, 64); return n }
		list := func() []uint32 {
			var out []uint32
			for _, w := range strings.Fields(v) {
				n, _ := strconv.ParseUint(w, 10, 32)
				out = append(out, uint32(n))
			}
			return out
		}
		switch k {
		case "Umask":
			n, _ := strconv.ParseUint(v, 8, 32)
			s.Umask = uint32(n)
		case "Threads":
			s.Threads, _ = strconv.Atoi(v)
		case "TracerPid":
			s.TracerPid, _ = strconv.Atoi(v)
		case "Uid":
			s.Uids = list()
		case "Gid":
			s.Gids = list()
		case "Groups":
			s.Groups = list()
		case "SigIgn":
			s.SigIgn = hex()
		case "SigCgt":
			s.SigCgt = hex()
		case "CapInh":
			s.CapInh = hex()
		case "CapPrm":
			s.CapPrm = hex()
		case "CapEff":
			s.CapEff = hex()
		case "CapBnd":
			s.CapBnd = hex()
		case "CapAmb":
			s.CapAmb = hex()
		case "NoNewPrivs":
			s.NoNewPrivs = v == "1"
		case "Seccomp":
			s.Seccomp, _ = strconv.Atoi(v)
		case "NSpid":
			for _, n := range list() {
				s.NSpid = append(s.NSpid, int(n))
			}
		}
	}
	return s
}

// Children lists the children of pid: those of every one of its threads
// (/proc/PID/task/TID/children), since a child forked by a thread other than the main one is
// listed under that thread only.
func Children(pid int) ([]int, error) {
	tids, err := Threads(pid)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, tid := range tids {
		b, err := os.ReadFile(filepath.Join(Root, strconv.Itoa(pid), "task", strconv.Itoa(tid), "children"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // the thread ended
		}
		if err != nil {
			return nil, err
		}
		for _, w := range strings.Fields(string(b)) {
			n, err := strconv.Atoi(w)
			if err != nil {
				return nil, fmt.Errorf("parse children of %d: %q", pid, w)
			}
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out, nil
}

// Threads lists the thread ids of pid.
func Threads(pid int) ([]int, error) {
	ents, err := os.ReadDir(path(pid, "task"))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, n)
		}
	}
	return out, nil
}

// Link reads a /proc/PID symlink such as exe, cwd, root or fd/N.
func Link(pid int, name string) (string, error) {
	return os.Readlink(path(pid, name))
}

// ReadFile reads /proc/PID/name whole.
func ReadFile(pid int, name string) ([]byte, error) {
	return os.ReadFile(path(pid, name))
}

// ReadInt reads /proc/PID/name that holds one integer (oom_score_adj, loginuid).
func ReadInt(pid int, name string) (int32, error) {
	b, err := os.ReadFile(path(pid, name))
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path(pid, name), err)
	}
	return int32(v), nil
}

// Path returns /proc/PID/name.
func Path(pid int, name string) string { return path(pid, name) }

// Limit is one line of /proc/PID/limits; Unlimited is ^0.
type Limit struct {
	Resource int
	Cur, Max uint64
}

// limitNames are the rows of /proc/PID/limits in RLIMIT_* order (asm-generic/resource.h).
var limitNames = []string{
	"Max cpu time", "Max file size", "Max data size", "Max stack size", "Max core file size",
	"Max resident set", "Max processes", "Max open files", "Max locked memory",
	"Max address space", "Max file locks", "Max pending signals", "Max msgqueue size",
	"Max nice priority", "Max realtime priority", "Max realtime timeout",
}

// ReadLimits parses /proc/PID/limits. prlimit on another user's task needs CAP_SYS_RESOURCE;
// this file does not.
func ReadLimits(pid int) ([]Limit, error) {
	b, err := os.ReadFile(path(pid, "limits"))
	if err != nil {
		return nil, err
	}
	return ParseLimits(b)
}

// ParseLimits parses the text of a /proc/PID/limits file.
func ParseLimits(b []byte) ([]Limit, error) {
	var out []Limit
	for _, line := range strings.Split(string(b), "\n") {
		for res, name := range limitNames {
			if !strings.HasPrefix(line, name+" ") {
				continue
			}
			f := strings.Fields(line[len(name):])
			if len(f) < 2 {
				return nil, fmt.Errorf("parse limits: %q", line)
			}
			val := func(s string) (uint64, error) {
				if s == "unlimited" {
					return ^uint64(0), nil
				}
				return strconv.ParseUint(s, 10, 64)
			}
			cur, err1 := val(f[0])
			max, err2 := val(f[1])
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("parse limits: %q", line)
			}
			out = append(out, Limit{Resource: res, Cur: cur, Max: max})
		}
	}
	if len(out) != len(limitNames) {
		return nil, fmt.Errorf("parse limits: %d rows, want %d", len(out), len(limitNames))
	}
	return out, nil
}

// FdInfo is the part of /proc/PID/fdinfo/N the dumper uses.
type FdInfo struct {
	Pos   int64
	Flags uint32
	MntID int
	// eventfd
	EventfdCount     uint64
	EventfdSemaphore bool
	// epoll: the watched fds
	Epoll []EpollItem
	// timerfd
	ClockID             int
	Ticks               uint64
	ValueNs, IntervalNs int64
	// signalfd
	SigMask uint64
	// inotify
	Inotify []InotifyWatch
	// pidfd: the process it refers to ("Pid:"; -1 once it has exited, 0 outside our pid
	// namespace).
	PidfdPid int
	// userfaultfd: the features enabled ("API:" line), 0 for another kind of fd.
	UffdFeatures uint64
	// The locks granted through this fd: flock and OFD locks of its open file description,
	// POSIX locks of this process on its file.
	Locks []Lock
}

// Lock is one "lock:" line of an fdinfo: "1: POSIX  ADVISORY  WRITE 1234 fe:00:5678 10 19".
type Lock struct {
	Kind  string // FLOCK, POSIX, OFDLCK; LEASE, DELEG... for what gocr does not restore
	Write bool
	Pid   int
	Start int64
	End   int64 // -1: to the end of the file
}

func parseLock(v string) (Lock, error) {
	f := strings.Fields(v)
	if len(f) > 1 && f[1] == "->" { // a blocked request (not shown in fdinfo today)
		f = append(f[:1], f[2:]...)
	}
	if len(f) < 8 {
		return Lock{}, fmt.Errorf("parse lock %q", v)
	}
	l := Lock{Kind: f[1], Write: f[3] == "WRITE", End: -1}
	var err1, err2, err3 error
	l.Pid, err1 = strconv.Atoi(f[4])
	l.Start, err2 = strconv.ParseInt(f[6], 10, 64)
	if f[7] != "EOF" {
		l.End, err3 = strconv.ParseInt(f[7], 10, 64)
	}
	if err1 != nil || err2 != nil || err3 != nil || (f[3] != "WRITE" && f[3] != "READ" && f[3] != "UNLCK") {
		return Lock{}, fmt.Errorf("parse lock %q", v)
	}
	return l, nil
}

// InotifyWatch is one "inotify wd:" line of an inotify fd's fdinfo.
type InotifyWatch struct {
	Wd         int
	Mask       uint32
	Sdev       uint64 // the kernel's dev_t: major << 20 | minor
	HandleType int
	Handle     []byte
}

// parseTimespec parses "(2, 999811059)" into nanoseconds.
func parseTimespec(v string) int64 {
	v = strings.Trim(v, "() ")
	sec, nsec, _ := strings.Cut(v, ",")
	a, _ := strconv.ParseInt(strings.TrimSpace(sec), 10, 64)
	b, _ := strconv.ParseInt(strings.TrimSpace(nsec), 10, 64)
	return a*1e9 + b
}

// parseInotify parses "wd:1 ino:3c4a3 sdev:fe00000 mask:300 ignored_mask:0 fhandle-bytes:8
// fhandle-type:1 f_handle:a3c4030000000000".
func parseInotify(v string) (InotifyWatch, error) {
	var w InotifyWatch
	for _, kv := range strings.Fields(v) {
		k, val, _ := strings.Cut(kv, ":")
		switch k {
		case "wd":
			w.Wd, _ = strconv.Atoi(val)
		case "sdev":
			w.Sdev, _ = strconv.ParseUint(val, 16, 64)
		case "mask":
			m, _ := strconv.ParseUint(val, 16, 32)
			w.Mask = uint32(m)
		case "fhandle-type":
			t, _ := strconv.ParseInt(val, 16, 32)
			w.HandleType = int(t)
		case "f_handle":
			for i := 0; i+1 < len(val); i += 2 {
				b, err := strconv.ParseUint(val[i:i+2], 16, 8)
				if err != nil {
					return w, fmt.Errorf("parse f_handle %q", val)
				}
				w.Handle = append(w.Handle, byte(b))
			}
		}
	}
	if w.Wd <= 0 || len(w.Handle) == 0 {
		return w, fmt.Errorf("parse inotify watch %q", v)
	}
	return w, nil
}

// EpollItem is one "tfd:" line of an epoll fd's fdinfo.
type EpollItem struct {
	Tfd    int
	Events uint32
	Data   uint64
	Ino    uint64 // of the file watched: the fd number may hold another one by now
}

// ReadFdInfo parses /proc/PID/fdinfo/FD.
func ReadFdInfo(pid, fd int) (*FdInfo, error) {
	b, err := os.ReadFile(path(pid, "fdinfo/"+strconv.Itoa(fd)))
	if err != nil {
		return nil, err
	}
	fi := &FdInfo{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		v = strings.TrimSpace(v)
		switch k {
		case "pos":
			fi.Pos, _ = strconv.ParseInt(v, 10, 64)
		case "flags":
			n, _ := strconv.ParseUint(v, 8, 32)
			fi.Flags = uint32(n)
		case "mnt_id":
			fi.MntID, _ = strconv.Atoi(v)
		case "clockid":
			fi.ClockID, _ = strconv.Atoi(v)
		case "ticks":
			fi.Ticks, _ = strconv.ParseUint(v, 10, 64)
		case "it_value":
			fi.ValueNs = parseTimespec(v)
		case "it_interval":
			fi.IntervalNs = parseTimespec(v)
		case "sigmask":
			fi.SigMask, _ = strconv.ParseUint(v, 16, 64)
		case "inotify wd":
			w, err := parseInotify("wd:" + v)
			if err != nil {
				return nil, fmt.Errorf("fdinfo %d of %d: %w", fd, pid, err)
			}
			fi.Inotify = append(fi.Inotify, w)
		case "Pid":
			fi.PidfdPid, _ = strconv.Atoi(v)
		case "API":
			// "aa:8000a000:1fc" (version, features, ioctls); bit 31 is internal.
			if f := strings.Split(v, ":"); len(f) >= 2 {
				fi.UffdFeatures, _ = strconv.ParseUint(f[1], 16, 64)
			}
		case "lock":
			l, err := parseLock(v)
			if err != nil {
				return nil, fmt.Errorf("fdinfo %d of %d: %w", fd, pid, err)
			}
			fi.Locks = append(fi.Locks, l)
		case "eventfd-count":
			fi.EventfdCount, _ = strconv.ParseUint(v, 16, 64)
		case "eventfd-semaphore":
			fi.EventfdSemaphore = v == "1"
		case "tfd":
			// "tfd:        5 events: 80000019 data:                5  pos:0 ino:8bdf sdev:f"
			f := strings.Fields(v)
			if len(f) < 5 || f[1] != "events:" || f[3] != "data:" {
				return nil, fmt.Errorf("parse fdinfo %d of %d: %q", fd, pid, sc.Text())
			}
			tfd, err1 := strconv.Atoi(f[0])
			ev, err2 := strconv.ParseUint(f[2], 16, 32)
			data, err3 := strconv.ParseUint(f[4], 16, 64)
			if err1 != nil || err2 != nil || err3 != nil {
				return nil, fmt.Errorf("parse fdinfo %d of %d: %q", fd, pid, sc.Text())
			}
			it := EpollItem{Tfd: tfd, Events: uint32(ev), Data: data}
			for _, w := range f[5:] {
				if x, ok := strings.CutPrefix(w, "ino:"); ok {
					it.Ino, _ = strconv.ParseUint(x, 16, 64)
				}
			}
			fi.Epoll = append(fi.Epoll, it)
		}
	}
	return fi, nil
}

// Fds lists the open fd numbers of pid in ascending order.
func Fds(pid int) ([]int, error) {
	ents, err := os.ReadDir(path(pid, "fd"))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out, nil
}

// PosixTimer is one timer of /proc/PID/timers.
type PosixTimer struct {
	ID, ClockID, Signo int
	SigevValue         uint64
	Notify             string // "signal", "none" or "thread"
	NotifyTid          int
}

// ReadTimers parses /proc/PID/timers.
func ReadTimers(pid int) ([]PosixTimer, error) {
	b, err := os.ReadFile(path(pid, "timers"))
	if err != nil {
		return nil, err
	}
	return ParseTimers(b)
}

// ParseTimers parses the text of /proc/PID/timers:
//
//	ID: 7
//	signal: 12/0000000000000000
//	notify: signal/pid.32591
//	ClockID: 1
func ParseTimers(b []byte) ([]PosixTimer, error) {
	var out []PosixTimer
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if k == "ID" {
			id, err := strconv.Atoi(v)
			if err != nil {
				return nil, fmt.Errorf("parse timers: %q", line)
			}
			out = append(out, PosixTimer{ID: id})
			continue
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("parse timers: %q before an ID", line)
		}
		t := &out[len(out)-1]
		switch k {
		case "signal":
			sig, val, _ := strings.Cut(v, "/")
			t.Signo, _ = strconv.Atoi(sig)
			t.SigevValue, _ = strconv.ParseUint(val, 16, 64)
		case "notify":
			kind, target, _ := strings.Cut(v, "/")
			t.Notify = kind
			if _, n, ok := strings.Cut(target, "."); ok {
				t.NotifyTid, _ = strconv.Atoi(n)
			}
		case "ClockID":
			t.ClockID, _ = strconv.Atoi(v)
		}
	}
	return out, nil
}

// Cgroup is one line of /proc/PID/cgroup: the hierarchy's controllers ("" for cgroup v2,
// "name=systemd" for a named one) and the path in it.
type Cgroup struct {
	Controllers string
	Path        string
}

// ReadCgroups parses /proc/PID/cgroup.
func ReadCgroups(pid int) ([]Cgroup, error) {
	b, err := os.ReadFile(path(pid, "cgroup"))
	if err != nil {
		return nil, err
	}
	var out []Cgroup
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			return nil, fmt.Errorf("parse cgroup line %q", l)
		}
		out = append(out, Cgroup{Controllers: f[1], Path: f[2]})
	}
	return out, nil
}

// CgroupMount is a mounted cgroup hierarchy: where, which part of it (Root), and its
// controllers as mount options ("cpu", "name=systemd"; none for cgroup v2).
type CgroupMount struct {
	Dir, Root string
	V2        bool
	Options   []string
}

// CgroupMounts lists the cgroup hierarchies mounted in this process's mount namespace.
func CgroupMounts() ([]CgroupMount, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []CgroupMount
	for _, l := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(l, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 || (g[0] != "cgroup" && g[0] != "cgroup2") {
			continue
		}
		out = append(out, CgroupMount{Dir: unescapeMount(f[4]), Root: unescapeMount(f[3]), V2: g[0] == "cgroup2", Options: strings.Split(g[2], ",")})
	}
	return out, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Job-control stop signals (SIGSTOP and those a terminal sends).
const (
	sigStop = 19
	sigTstp = 20
	sigTtin = 21
	sigTtou = 22
)

// StopSignal is the signal that stops pid again as sig did: sig itself when it is SIGTSTP,
// SIGTTIN or SIGTTOU, its action is the default one, and its process group is not orphaned
// (the kernel drops those signals for an orphaned group, and the process would run); else
// SIGSTOP.
func StopSignal(pid, sig int) int {
	if sig != sigTstp && sig != sigTtin && sig != sigTtou {
		return sigStop
	}
	st, err := ReadStatus(pid)
	if err != nil || (st.SigCgt|st.SigIgn)&(1<<(sig-1)) != 0 {
		return sigStop
	}
	if orphaned, err := OrphanedGroup(pid); err != nil || orphaned {
		return sigStop
	}
	return sig
}

// OrphanedGroup says whether pid's process group is orphaned: no member has a parent in
// another group of the same session.
func OrphanedGroup(pid int) (bool, error) {
	me, err := ReadStat(pid)
	if err != nil {
		return false, err
	}
	ents, err := os.ReadDir(Root)
	if err != nil {
		return false, err
	}
	for _, e := range ents {
		q, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := ReadStat(q)
		if err != nil || st.PGid != me.PGid {
			continue
		}
		if parent, err := ReadStat(st.PPid); err == nil && parent.PGid != me.PGid && parent.Sid == me.Sid {
			return false, nil
		}
	}
	return true, nil
}
