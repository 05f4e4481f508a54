package procfs

import "testing"

// fdinfo "lock:" lines as Linux 6.18 prints them.
func TestParseLock(t *testing.T) {
	for _, c := range []struct {
		line string
		want Lock
	}{
		{"1: FLOCK  ADVISORY  WRITE 12824 fe:00:9977969 0 EOF", Lock{Kind: "FLOCK", Write: true, Pid: 12824, Start: 0, End: -1}},
		{"2: POSIX  ADVISORY  READ 12824 fe:00:9977988 100 EOF", Lock{Kind: "POSIX", Pid: 12824, Start: 100, End: -1}},
		{"1: OFDLCK ADVISORY  READ -1 fe:00:9978003 0 4", Lock{Kind: "OFDLCK", Pid: -1, Start: 0, End: 4}},
		{"1: LEASE  ACTIVE    READ 300 fe:00:12 0 EOF", Lock{Kind: "LEASE", Pid: 300, Start: 0, End: -1}},
	} {
		got, err := parseLock(c.line)
		if err != nil || got != c.want {
			t.Errorf("parseLock(%q) = %+v, %v; want %+v", c.line, got, err, c.want)
		}
	}
	if _, err := parseLock("1: POSIX ADVISORY"); err == nil {
		t.Error("a short lock line parsed")
	}
}
