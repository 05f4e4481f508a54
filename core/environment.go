package core

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/procfs"
)

// environmentProblems finds what this machine lacks for the image beyond its binaries: a
// working directory that is gone, a port another socket holds. The restore's preflight and
// check mode both ask it, so that both say the same, before any process is made.
func environmentProblems(c *image.Checkpoint, add func(what, hint, format string, args ...any)) {
	own, ownErr := procfs.ReadStatus(os.Getpid())
	ownAdj, adjErr := procfs.ReadInt(os.Getpid(), "oom_score_adj")
	for _, pe := range c.Tree.Processes {
		p := c.Procs[pe.Pid]
		if pe.Zombie || p == nil {
			continue
		}
		if p.CwdRemoved != nil {
			if _, err := os.Lstat(p.Cwd); err == nil {
				add(fmt.Sprintf("pid %d", pe.Pid), "remove what is there now, or restore elsewhere", "the path of its removed working directory %s is taken", p.Cwd)
			}
		} else if st, err := os.Stat(p.Cwd); err != nil || !st.IsDir() {
			add(fmt.Sprintf("pid %d", pe.Pid), "make the directory again, or restore where it is", "its working directory %s is gone", p.Cwd)
		}
		if ownErr == nil && adjErr == nil {
			credentialProblems(pe.Pid, p, own, ownAdj, add)
		}
	}
	owner := map[uint32]string{} // file id -> "pid N fd M"
	for _, pe := range c.Tree.Processes {
		if p := c.Procs[pe.Pid]; p != nil {
			for _, fd := range p.Fds {
				if _, ok := owner[fd.FileId]; !ok {
					owner[fd.FileId] = fmt.Sprintf("pid %d fd %d", pe.Pid, fd.Fd)
				}
			}
		}
	}
	for _, f := range c.Tree.Files {
		if ns := c.Tree.Namespaces; ns != nil && ns.Net {
			break // its ports are those of a new network namespace: all free
		}
		in := f.InetSocket
		if f.Kind != imagepb.FileKind_FILE_KIND_INET_SOCKET || in == nil || in.Local == "" || (in.State != 10 && in.State != 7) {
			continue
		}
		ap, err := netip.ParseAddrPort(in.Local)
		if err != nil || ap.Port() == 0 {
			continue
		}
		s, err := inetFromImage(in)
		if err != nil {
			continue // a validated image's addresses parse
		}
		if err := linux.BindProbe(s); errors.Is(err, linux.EADDRINUSE) {
			udp := in.Protocol == 17
			proto := map[bool]string{false: "TCP", true: "UDP"}[udp]
			who := procfs.PortHolders(udp, ap.Port())
			held := ""
			if len(who) > 0 {
				held = ", held by " + strings.Join(who, ", ")
			}
			add(owner[f.Id], "end what holds it, or restore elsewhere", "%s port %s is taken%s", proto, ap, held)
		}
	}
	memoryCgroupProblems(c, add)
	missingFileProblems(c, owner, add)
}

// missingFileProblems finds the binaries, open files and sockets connected to that are not
// here any more.
func missingFileProblems(c *image.Checkpoint, owner map[uint32]string, add func(what, hint, format string, args ...any)) {
	for _, pe := range c.Tree.Processes {
		if p := c.Procs[pe.Pid]; !pe.Zombie && p != nil && p.Mm.ExeSavedFileId == 0 {
			if _, err := os.Stat(p.Mm.Exe); err != nil {
				add(p.Mm.Exe, "install it again, or restore where it is", "binary of pid %d is missing", pe.Pid)
			}
		}
	}
	bound := map[string]bool{} // names the tree's own sockets bind again
	for _, f := range c.Tree.Files {
		if u := f.UnixSocket; u != nil && u.Name != "" {
			bound[u.Name] = true
		}
	}
	for _, f := range c.Tree.Files {
		if owner[f.Id] == "" {
			owner[f.Id] = "a message in flight" // held by no process: sent on a socket
		}
		if u := f.UnixSocket; u != nil && u.ConnectTo != "" && !bound[u.ConnectTo] && u.ConnectTo[0] == '/' {
			if st, err := os.Stat(u.ConnectTo); err != nil || st.Mode()&os.ModeSocket == 0 {
				add(u.ConnectTo, "start what listens there first", "socket %s is connected to is missing", owner[f.Id])
			}
		}
		if _, _, ok := c.TreeProcPath(f.Path); ok || f.Deleted {
			continue // made with its process, or from the image
		}
		if c.Tree.ShellJob && f.Rdev == c.Tree.CttyRdev && f.Kind == imagepb.FileKind_FILE_KIND_CHAR_DEVICE {
			continue // the job's terminal: the restoring gocr's takes its place
		}
		switch f.Kind {
		case imagepb.FileKind_FILE_KIND_REGULAR, imagepb.FileKind_FILE_KIND_DIRECTORY,
			imagepb.FileKind_FILE_KIND_FIFO, imagepb.FileKind_FILE_KIND_CHAR_DEVICE, imagepb.FileKind_FILE_KIND_OPATH:
			if _, err := os.Lstat(f.Path); err != nil {
				add(f.Path, "put it back, or restore where it is", "open file of %s is missing", owner[f.Id])
			}
		}
	}
}

// capSysResource is CAP_SYS_RESOURCE's bit.
const capSysResource = 1 << 24

// credentialProblems finds what of the process's credentials gocr cannot give it: a
// capability gocr lacks, an oom_score_adj below gocr's own without CAP_SYS_RESOURCE.
func credentialProblems(pid int32, p *imagepb.Process, own *procfs.Status, ownAdj int32, add func(what, hint, format string, args ...any)) {
	if p.Creds == nil {
		return
	}
	c := p.Creds
	if missing := (c.CapPrm | c.CapInh | c.CapBnd) &^ own.CapBnd; missing != 0 {
		add(fmt.Sprintf("pid %d", pid), "restore with a gocr that holds them", "it has capabilities %#x that gocr's bounding set lacks", missing)
	}
	if adj := ownAdj; p.OomScoreAdj < adj && own.CapEff&capSysResource == 0 {
		add(fmt.Sprintf("pid %d", pid), "restore with CAP_SYS_RESOURCE, or lower gocr's own oom_score_adj first",
			"its oom_score_adj %d is lower than gocr's %d, which needs CAP_SYS_RESOURCE", p.OomScoreAdj, adj)
	}
}

// imageMemory is what the image's memory takes once restored, in bytes.
func imageMemory(c *image.Checkpoint) uint64 {
	var n uint64
	for _, p := range c.Procs {
		for _, r := range p.Pages {
			n += r.NrPages * linux.PageSize
		}
	}
	for _, s := range c.Tree.Shmem {
		for _, r := range s.Runs {
			n += r.NrPages * linux.PageSize
		}
	}
	return n
}

// memoryCgroupProblems refuses an image whose memory the memory cgroups would not hold: gocr's
// own (the restored processes fill their memory there) and each process's own where it exists,
// each with its limit minus what it holds now. A restore past a limit is killed by the OOM
// killer, which would say no more than "process exited".
func memoryCgroupProblems(c *image.Checkpoint, add func(what, hint, format string, args ...any)) {
	mounts, err := procfs.CgroupMounts()
	if err != nil {
		return
	}
	need := imageMemory(c)
	check := func(dir, whose string, need uint64) {
		limitFile, usageFile := "memory.limit_in_bytes", "memory.usage_in_bytes"
		if _, err := os.Stat(filepath.Join(dir, "memory.max")); err == nil {
			limitFile, usageFile = "memory.max", "memory.current"
		}
		lb, err1 := os.ReadFile(filepath.Join(dir, limitFile))
		ub, err2 := os.ReadFile(filepath.Join(dir, usageFile))
		limit, err3 := strconv.ParseUint(strings.TrimSpace(string(lb)), 10, 64)
		usage, err4 := strconv.ParseUint(strings.TrimSpace(string(ub)), 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil { // "max": no limit
			return
		}
		room := uint64(0)
		if limit > usage {
			room = limit - usage
		}
		if room < need {
			add("memory cgroup "+dir, "raise its limit, or restore where there is room",
				"%s allows %d MiB more (limit %d MiB), the image needs %d MiB", whose, room>>20, limit>>20, (need+(1<<20)-1)>>20)
		}
	}
	memOf := func(cgs []procfs.Cgroup) string {
		for _, cg := range cgs {
			ic := &imagepb.Cgroup{Controllers: cg.Controllers, Path: cg.Path}
			if cg.Controllers == "" || strings.Contains(","+cg.Controllers+",", ",memory,") {
				if d := cgroupDir(mounts, ic); d != "" {
					if _, err := os.Stat(filepath.Join(d, "memory.max")); err == nil || strings.Contains(","+cg.Controllers+",", ",memory,") {
						return d
					}
				}
			}
		}
		return ""
	}
	mine, err := procfs.ReadCgroups(os.Getpid())
	if err != nil {
		return
	}
	if d := memOf(mine); d != "" {
		check(d, "gocr's memory cgroup, where the restored processes are filled,", need)
	}
	per := map[string]uint64{}
	for pid, p := range c.Procs {
		var cgs []procfs.Cgroup
		for _, cg := range p.Cgroups {
			cgs = append(cgs, procfs.Cgroup{Controllers: cg.Controllers, Path: cg.Path})
		}
		if d := memOf(cgs); d != "" && d != memOf(mine) {
			for _, r := range c.Procs[pid].Pages {
				per[d] += r.NrPages * linux.PageSize
			}
		}
	}
	for d, n := range per {
		if _, err := os.Stat(d); err == nil {
			check(d, "the cgroup the processes go back to", n)
		}
	}
}
