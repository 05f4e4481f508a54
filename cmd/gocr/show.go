package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/core/image/imagepb"
)

type showOptions struct {
	*globalOptions
	dir  string
	json bool
}

func newCmdShow(g *globalOptions, runF func(*showOptions) error) *cobra.Command {
	opts := &showOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "show [-D] DIR",
		Short: "Print what an image holds",
		Long: `Print the processes of an image with their mappings, page counts, open files and
signals, as text or, with --json, as JSON for programs. The image is checked first.`,
		Example: "  gocr show /tmp/img\n  gocr show --json -D /tmp/img",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 || (len(args) == 1 && opts.dir != "") {
				return usageError{fmt.Errorf("show: give one images directory")}
			}
			if len(args) == 1 {
				opts.dir = args[0]
			}
			if opts.dir == "" {
				return usageError{fmt.Errorf("show: which image? give its directory")}
			}
			if runF != nil {
				return runF(opts)
			}
			return showRun(opts)
		},
	}
	cmd.Flags().StringVarP(&opts.dir, "images-dir", "D", "", "images directory")
	cmd.Flags().BoolVar(&opts.json, "json", false, "print JSON")
	return cmd
}

func showRun(opts *showOptions) error {
	c, err := image.Open(opts.dir)
	if err != nil {
		return fmt.Errorf("show: %w", err)
	}
	if opts.json {
		return showJSON(opts.out, c)
	}
	showText(opts.out, c)
	return nil
}

func showJSON(w io.Writer, c *image.Checkpoint) error {
	m := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false}
	raw := func(msg proto.Message) json.RawMessage {
		b, err := m.Marshal(msg)
		if err != nil {
			return json.RawMessage(`null`)
		}
		return b
	}
	var procs []json.RawMessage
	for _, p := range c.Tree.Processes {
		if !p.Zombie {
			procs = append(procs, raw(c.Procs[p.Pid]))
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"index": raw(c.Index), "tree": raw(c.Tree), "processes": procs})
}

func showText(w io.Writer, c *image.Checkpoint) {
	idx := c.Index
	var total uint64
	for _, f := range idx.Files {
		total += f.Size
	}
	fmt.Fprintf(w, "image %s: %s, format %d, gocr %s, kernel %s, written %s\n", c.Dir,
		kindName(idx.Kind), idx.FormatVersion, idx.GocrVersion, idx.KernelRelease,
		time.Unix(0, idx.CreatedUnixNano).Format(time.RFC3339))
	fmt.Fprintf(w, "%d files, %s; XSTATE %d bytes, features %#x\n", len(idx.Files), humanBytes(total), c.Tree.Cpu.XstateSize, c.Tree.Cpu.Xfeatures)
	if ns := c.Tree.Namespaces; ns != nil {
		var own []string
		if ns.Pid {
			own = append(own, "pid (pids are the namespace's)")
		}
		if ns.Uts {
			own = append(own, fmt.Sprintf("uts (host %q, domain %q)", ns.Hostname, ns.Domainname))
		}
		if ns.Ipc {
			own = append(own, fmt.Sprintf("ipc (%d semaphore sets, %d message queues)", len(ns.SysvSem), len(ns.SysvMsg)))
		}
		if ns.Net {
			own = append(own, fmt.Sprintf("net (lo up: %v)", ns.LoUp))
		}
		fmt.Fprintf(w, "namespaces of its own: %s\n", strings.Join(own, ", "))
	}
	if idx.Parent != "" {
		fmt.Fprintf(w, "parent image: %s (needed to restore this one)\n", idx.Parent)
	}
	if c.Tree.NetLock != "" {
		fmt.Fprintf(w, "network lock: nftables table inet %s (the restore removes it)\n", c.Tree.NetLock)
	}
	files := map[uint32]*imagepb.OpenFile{}
	for _, f := range c.Tree.Files {
		files[f.Id] = f
	}
	pipes := map[uint32]*imagepb.Pipe{}
	for _, p := range c.Tree.Pipes {
		pipes[p.Id] = p
	}
	for _, pe := range c.Tree.Processes {
		if pe.Zombie {
			fmt.Fprintf(w, "\nprocess %d (%s) ppid %d pgid %d sid %d: zombie, wait status %#x\n", pe.Pid, pe.Comm, pe.Ppid, pe.Pgid, pe.Sid, pe.ExitStatus)
			continue
		}
		p := c.Procs[pe.Pid]
		fmt.Fprintf(w, "\nprocess %d (%s) ppid %d pgid %d sid %d threads %v\n", pe.Pid, pe.Comm, pe.Ppid, pe.Pgid, pe.Sid, pe.Threads)
		fmt.Fprintf(w, "  exe %s\n  cwd %s  root %s  umask %03o  uid %v gid %v\n", pe.Exe, p.Cwd, p.Root, p.Umask, p.Creds.Uids, p.Creds.Gids)
		fmt.Fprintf(w, "  registers: rip %#x rsp %#x rax %#x orig_rax %d\n", p.Regs.Rip, p.Regs.Rsp, p.Regs.Rax, int64(p.Regs.OrigRax))
		var pending []string
		for _, s := range p.Pending {
			scope := "thread"
			if s.Shared {
				scope = "process"
			}
			pending = append(pending, fmt.Sprintf("%s (%s)", sigName(s.Signo), scope))
		}
		fmt.Fprintf(w, "  signals: blocked %s; pending %s\n", sigSet(p.Sigmask), orNone(pending))
		for _, a := range p.Sigactions {
			h := fmt.Sprintf("handler %#x", a.Handler)
			switch a.Handler {
			case 0:
				h = "default"
			case 1:
				h = "ignored"
			}
			fmt.Fprintf(w, "    %-9s %s flags %#x mask %s\n", sigName(a.Signo), h, a.Flags, sigSet(a.Mask))
		}
		for _, th := range p.Threads {
			var tp []string
			for _, s := range th.Pending {
				tp = append(tp, sigName(s.Signo))
			}
			fmt.Fprintf(w, "  thread %d (%s): rip %#x rsp %#x; blocked %s; pending %s\n", th.Tid, th.Comm, th.Regs.Rip, th.Regs.Rsp, sigSet(th.Sigmask), orNone(tp))
		}
		var pages, inParent uint64
		for _, r := range p.Pages {
			if r.InParent {
				inParent += r.NrPages
			} else {
				pages += r.NrPages
			}
		}
		fmt.Fprintf(w, "  memory: %d mappings, %d pages (%s) dumped", len(p.Vmas), pages, humanBytes(pages*4096))
		if inParent > 0 {
			fmt.Fprintf(w, ", %d more in the parent image", inParent)
		}
		fmt.Fprintf(w, "; brk %#x\n", p.Mm.Brk)
		if p.Tracker != nil {
			fmt.Fprintf(w, "  memory tracked since this image (userfaultfd at fd %d)\n", p.Tracker.Fd)
		}
		for _, v := range p.Vmas {
			tracked := ""
			if v.Tracked {
				tracked = " (tracked)"
			}
			fmt.Fprintf(w, "    %012x-%012x %s %-12s %5d pages  %s%s\n", v.Start, v.End, protString(v), vmaKindName(v.Kind), vmaPages(p.Pages, v), v.Path, tracked)
		}
		fmt.Fprintf(w, "  files:\n")
		for _, fd := range p.Fds {
			f := files[fd.FileId]
			name := f.Path
			extra := ""
			if f.Kind == imagepb.FileKind_FILE_KIND_PIPE || f.Kind == imagepb.FileKind_FILE_KIND_FIFO {
				pp := pipes[f.PipeId]
				if name == "" {
					name = fmt.Sprintf("pipe:[%d]", pp.Ino)
				}
				extra = fmt.Sprintf(", %d bytes unread", pp.DataLen)
			}
			if f.Deleted {
				extra += ", deleted"
			}
			if u := f.UnixSocket; u != nil {
				queued := 0
				for _, m := range u.Queue {
					queued += len(m)
				}
				extra += fmt.Sprintf(", unix %s %s", map[int32]string{1: "stream", 2: "dgram", 5: "seqpacket"}[u.Type], map[int32]string{1: "connected", 7: "unconnected", 10: "listening"}[u.State])
				if u.Name != "" {
					extra += " " + u.Name
				}
				if u.ConnectTo != "" {
					extra += " -> " + u.ConnectTo
				}
				if queued > 0 {
					extra += fmt.Sprintf(", %d bytes queued", queued)
				}
			}
			if in := f.InetSocket; in != nil {
				extra += fmt.Sprintf(", %s %s", map[int32]string{6: "tcp", 17: "udp"}[in.Protocol], in.Local)
				if in.Peer != "" {
					extra += " -> " + in.Peer
				}
				if in.State == 10 {
					extra += " listening"
				}
				if in.Tcp != nil {
					extra += fmt.Sprintf(" (repair: %d bytes to send, %d received)", len(in.Tcp.SendQueue), len(in.Tcp.RecvQueue))
				}
			}
			if n := f.NetlinkSocket; n != nil {
				extra += fmt.Sprintf(", netlink protocol %d port %d groups %v", n.Protocol, n.Portid, n.Groups)
			}
			if f.Plugin != "" {
				extra += ", plugin " + f.Plugin
			}
			if f.Kind == imagepb.FileKind_FILE_KIND_EVENTFD {
				extra += fmt.Sprintf(", count %d", f.EventfdCount)
			}
			if f.Kind == imagepb.FileKind_FILE_KIND_EPOLL {
				var fds []string
				for _, it := range f.EpollItems {
					fds = append(fds, fmt.Sprintf("%d:%#x", it.Tfd, it.Events))
				}
				extra += ", watching " + orNone(fds)
			}
			for _, l := range f.Locks {
				extra += ", " + lockString(l)
			}
			for _, l := range p.Locks {
				if l.Fd == fd.Fd {
					extra += ", " + lockString(l)
				}
			}
			cloexec := ""
			if fd.Cloexec {
				cloexec = "|O_CLOEXEC"
			}
			fmt.Fprintf(w, "    %3d %-11s %s%s pos %d  %s%s\n", fd.Fd, fileKindName(f.Kind), openFlags(f.Flags), cloexec, f.Pos, name, extra)
		}
	}
}

func vmaPages(runs []*imagepb.PageRun, v *imagepb.VMA) uint64 {
	var n uint64
	for _, r := range runs {
		lo, hi := max(r.Vaddr, v.Start), min(r.Vaddr+r.NrPages*4096, v.End)
		if hi > lo {
			n += (hi - lo) / 4096
		}
	}
	return n
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func protString(v *imagepb.VMA) string {
	b := []byte("---p")
	if v.Prot&1 != 0 {
		b[0] = 'r'
	}
	if v.Prot&2 != 0 {
		b[1] = 'w'
	}
	if v.Prot&4 != 0 {
		b[2] = 'x'
	}
	if v.Shared {
		b[3] = 's'
	}
	return string(b)
}

func kindName(k imagepb.Kind) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k.String(), "KIND_")), "_", "-")
}

func vmaKindName(k imagepb.VMAKind) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k.String(), "VMA_KIND_")), "_", "-")
}

func fileKindName(k imagepb.FileKind) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k.String(), "FILE_KIND_")), "_", "-")
}

func openFlags(f uint32) string {
	s := [...]string{"O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE"}[f&3]
	for _, b := range []struct {
		bit  uint32
		name string
	}{{0o2000, "O_APPEND"}, {0o4000, "O_NONBLOCK"}, {0o40000, "O_DIRECT"}, {0o400000, "O_NOATIME"}, {0o4010000, "O_SYNC"}} {
		if f&b.bit == b.bit {
			s += "|" + b.name
		}
	}
	return s
}

var sigNames = map[int32]string{1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS",
	8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM",
	16: "SIGSTKFLT", 17: "SIGCHLD", 18: "SIGCONT", 19: "SIGSTOP", 20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU", 23: "SIGURG",
	24: "SIGXCPU", 25: "SIGXFSZ", 26: "SIGVTALRM", 27: "SIGPROF", 28: "SIGWINCH", 29: "SIGIO", 30: "SIGPWR", 31: "SIGSYS"}

func sigName(n int32) string {
	if s, ok := sigNames[n]; ok {
		return s
	}
	if n < 34 {
		return fmt.Sprintf("SIG%d", n) // reserved by glibc for its threads
	}
	return fmt.Sprintf("SIGRTMIN+%d", n-34)
}

func sigSet(m uint64) string {
	var out []string
	for i := int32(1); i <= 64; i++ {
		if m&(1<<(i-1)) != 0 {
			out = append(out, sigName(i))
		}
	}
	if len(out) > 8 {
		return fmt.Sprintf("%#x", m)
	}
	return orNone(out)
}

// lockString prints a file lock as "flock write" or "POSIX read lock on bytes 10-19".
func lockString(l *imagepb.FileLock) string {
	mode := "read"
	if l.Write {
		mode = "write"
	}
	switch l.Kind {
	case imagepb.LockKind_LOCK_KIND_FLOCK:
		return "flock " + mode
	case imagepb.LockKind_LOCK_KIND_OFD:
		mode = "OFD " + mode
	default:
		mode = "POSIX " + mode
	}
	end := "EOF"
	if l.End >= 0 {
		end = fmt.Sprint(l.End)
	}
	return fmt.Sprintf("%s lock on bytes %d-%s", mode, l.Start, end)
}
