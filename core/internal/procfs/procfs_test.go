package procfs

import "testing"

func TestParseSmaps(t *testing.T) {
	text := `7f369444f000-7f3694453000 r--p 00000000 00:00 0                          [vvar]
VmFlags: rd mr pf io de dd sd
55d0c0a00000-55d0c0a02000 rw-s 00001000 fe:00 247026                     /tmp/a file (deleted)
Size:                  8 kB
VmFlags: rd wr sh mr mw me ms sd
7ffd1e5e6000-7ffd1e607000 rw-p 00000000 00:00 0 
`
	m, err := ParseSmaps([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 3 {
		t.Fatalf("got %d mappings, want 3", len(m))
	}
	if m[0].Path != "[vvar]" || !m[0].HasFlag("dd") || m[0].Write {
		t.Errorf("vvar parsed as %+v", m[0])
	}
	if m[1].Path != "/tmp/a file (deleted)" || !m[1].Shared || m[1].Offset != 0x1000 || m[1].DevMajor != 0xfe || m[1].Inode != 247026 {
		t.Errorf("file mapping parsed as %+v", m[1])
	}
	if m[2].Path != "" || m[2].Start != 0x7ffd1e5e6000 || !m[2].Write {
		t.Errorf("anon mapping parsed as %+v", m[2])
	}
}

func TestParseStat(t *testing.T) {
	text := "4121 (a (b) c) S 1 4121 4121 0 -1 4194560 97 0 0 0 0 0 0 0 20 0 1 0 123 2592768 218 18446744073709551615 94000000 94100000 140730000 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 94200000 94300000 94400000 140731000 140731100 140731100 140731200 0\n"
	s, err := ParseStat([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if s.Comm != "a (b) c" || s.PPid != 1 || s.PGid != 4121 || s.Sid != 4121 || s.StartCode != 94000000 || s.StartBrk != 94400000 || s.EnvEnd != 140731200 {
		t.Errorf("parsed %+v", s)
	}
}

func TestParseLimits(t *testing.T) {
	b, err := ReadFile(1, "limits")
	if err != nil {
		t.Skip("no /proc/1/limits")
	}
	l, err := ParseLimits(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 16 || l[7].Resource != 7 || l[7].Cur == 0 {
		t.Errorf("parsed %+v", l)
	}
}
