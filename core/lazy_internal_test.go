package core

import "testing"

// The background copy takes the most recently written pages first (level 0: the image's
// own), and cutting a range keeps where each part's content is.
func TestLazyRanges(t *testing.T) {
	f := &lazyFile{name: "pages-1.img"}
	rs := []lazyRange{{addr: 0x1000, len: 0x3000, src: f, off: 0, level: 2}, {addr: 0x8000, len: 0x2000, src: f, off: 0x3000, level: 0}, {addr: 0xa000, len: 0x1000, src: f, off: 0x5000, level: 1}}
	if i := nextRange(rs); i != 1 {
		t.Errorf("next range %d, want 1 (level 0)", i)
	}
	kept, cut := cutRanges(rs, 0x2000, 0x9000)
	want := []lazyRange{{addr: 0x1000, len: 0x1000, src: f, off: 0, level: 2}, {addr: 0x9000, len: 0x1000, src: f, off: 0x4000, level: 0}, {addr: 0xa000, len: 0x1000, src: f, off: 0x5000, level: 1}}
	if len(kept) != len(want) {
		t.Fatalf("kept %+v, want %+v", kept, want)
	}
	for i := range want {
		if kept[i] != want[i] {
			t.Errorf("kept[%d] = %+v, want %+v", i, kept[i], want[i])
		}
	}
	if len(cut) != 2 || cut[0].addr != 0x2000 || cut[0].len != 0x2000 || cut[0].off != 0x1000 || cut[1].addr != 0x8000 || cut[1].len != 0x1000 {
		t.Errorf("cut %+v", cut)
	}
	if findRange(kept, 0x9800) != 1 || findRange(kept, 0x2000) != -1 {
		t.Errorf("findRange in %+v", kept)
	}
}
