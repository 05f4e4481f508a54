package procfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// PortHolders names the processes holding an inet socket bound to port (TCP or UDP, IPv4 or
// IPv6, /proc/net): "pid 123 (nginx)", for a message saying who has a port taken.
func PortHolders(udp bool, port uint16) []string {
	tables := []string{"tcp", "tcp6"}
	if udp {
		tables = []string{"udp", "udp6"}
	}
	inodes := map[string]bool{}
	for _, tbl := range tables {
		b, err := os.ReadFile(filepath.Join(Root, "net", tbl))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 {
				continue
			}
			_, hexPort, ok := strings.Cut(f[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); ok && err == nil && uint16(p) == port && f[9] != "0" {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	var out []string
	if len(inodes) == 0 {
		return out
	}
	procs, _ := os.ReadDir(Root)
	for _, pe := range procs {
		pid, err := strconv.Atoi(pe.Name())
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join(Root, pe.Name(), "fd"))
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join(Root, pe.Name(), "fd", fd.Name())); err == nil && inodes[l] {
				comm, _ := os.ReadFile(filepath.Join(Root, pe.Name(), "comm"))
				out = append(out, fmt.Sprintf("pid %d (%s)", pid, strings.TrimSpace(string(comm))))
				break
			}
		}
	}
	return out
}
