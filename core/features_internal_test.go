package core

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// An operation that needs a feature this kernel lacks fails at once, naming it, before it
// touches anything.
func TestNeedFeatures(t *testing.T) {
	saved := Features()
	t.Cleanup(func() { features = saved })
	features = append([]Feature(nil), saved...)
	for i := range features {
		if strings.HasPrefix(features[i].Name, "PAGEMAP_SCAN") {
			features[i].Present = false
		}
	}
	_, err := Dump(context.Background(), DumpOptions{Roots: []int{1}, Dir: t.TempDir() + "/img"})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "PAGEMAP_SCAN ioctl (Linux 6.7)") {
		t.Fatalf("dump without PAGEMAP_SCAN: %v, want a refusal naming it", err)
	}
	if _, err := Track(context.Background(), TrackOptions{Roots: []int{1}}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("track without PAGEMAP_SCAN: %v", err)
	}
	// A restore does not need it.
	if err := needFeatures("restore"); err != nil {
		t.Fatalf("restore refused for a feature only dumps need: %v", err)
	}
}
