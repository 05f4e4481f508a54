package core

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
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
	for _, pe := range c.Tree.Processes {
		p := c.Procs[pe.Pid]
		if pe.Zombie || p == nil {
			continue
		}
		if st, err := os.Stat(p.Cwd); err != nil || !st.IsDir() {
			add(fmt.Sprintf("pid %d", pe.Pid), "make the directory again, or restore where it is", "its working directory %s is gone", p.Cwd)
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
		in := f.InetSocket
		if f.Kind != imagepb.FileKind_FILE_KIND_INET_SOCKET || in == nil || in.Local == "" || (in.State != 10 && in.State != 7) {
			continue
		}
		ap, err := netip.ParseAddrPort(in.Local)
		if err != nil || ap.Port() == 0 {
			continue
		}
		s := &linux.InetSocket{Family: int(in.Family), Type: int(in.Type), Protocol: int(in.Protocol), Local: ap, Opts: map[string]int{}}
		for k, v := range in.Options {
			s.Opts[k] = int(v)
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
}
