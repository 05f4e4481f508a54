package procfs

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Mapping is one VMA from /proc/PID/smaps.
type Mapping struct {
	Start, End uint64
	Read       bool
	Write      bool
	Exec       bool
	Shared     bool
	Offset     uint64
	DevMajor   uint32
	DevMinor   uint32
	Inode      uint64
	Path       string
	VmFlags    []string
	Rss        uint64 // bytes resident (smaps)
}

// HasFlag reports whether the VMA has the two-letter VmFlag f.
func (m *Mapping) HasFlag(f string) bool {
	for _, x := range m.VmFlags {
		if x == f {
			return true
		}
	}
	return false
}

// ReadSmaps parses /proc/PID/smaps.
func ReadSmaps(pid int) ([]Mapping, error) {
	b, err := ReadFile(pid, "smaps")
	if err != nil {
		return nil, err
	}
	return ParseSmaps(b)
}

// ParseSmaps parses the text of /proc/PID/smaps (or /proc/PID/maps, without VmFlags).
func ParseSmaps(b []byte) ([]Mapping, error) {
	var out []Mapping
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "VmFlags:") {
			if len(out) == 0 {
				return nil, fmt.Errorf("parse smaps: VmFlags before a mapping")
			}
			out[len(out)-1].VmFlags = strings.Fields(line[len("VmFlags:"):])
			continue
		}
		if v, ok := strings.CutPrefix(line, "Rss:"); ok && len(out) > 0 {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			out[len(out)-1].Rss = kb << 10
			continue
		}
		f := strings.Fields(line)
		if len(f) < 5 || !strings.Contains(f[0], "-") || strings.HasSuffix(f[0], ":") {
			continue // a "Key: value" line of smaps
		}
		m, err := parseMapLine(line, f)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

func parseMapLine(line string, f []string) (Mapping, error) {
	var m Mapping
	lo, hi, ok := strings.Cut(f[0], "-")
	if !ok {
		return m, fmt.Errorf("parse maps: %q", line)
	}
	var err error
	if m.Start, err = strconv.ParseUint(lo, 16, 64); err != nil {
		return m, fmt.Errorf("parse maps: %q", line)
	}
	if m.End, err = strconv.ParseUint(hi, 16, 64); err != nil {
		return m, fmt.Errorf("parse maps: %q", line)
	}
	if len(f[1]) != 4 {
		return m, fmt.Errorf("parse maps: %q", line)
	}
	m.Read, m.Write, m.Exec, m.Shared = f[1][0] == 'r', f[1][1] == 'w', f[1][2] == 'x', f[1][3] == 's'
	if m.Offset, err = strconv.ParseUint(f[2], 16, 64); err != nil {
		return m, fmt.Errorf("parse maps: %q", line)
	}
	maj, min, _ := strings.Cut(f[3], ":")
	a, _ := strconv.ParseUint(maj, 16, 32)
	b, _ := strconv.ParseUint(min, 16, 32)
	m.DevMajor, m.DevMinor = uint32(a), uint32(b)
	if m.Inode, err = strconv.ParseUint(f[4], 10, 64); err != nil {
		return m, fmt.Errorf("parse maps: %q", line)
	}
	// The path is the rest of the line after the fifth column; it may hold spaces.
	rest := line
	for i := 0; i < 5; i++ {
		rest = strings.TrimLeft(rest, " ")
		if j := strings.IndexByte(rest, ' '); j >= 0 {
			rest = rest[j:]
		} else {
			rest = ""
		}
	}
	m.Path = strings.TrimLeft(rest, " ")
	return m, nil
}
