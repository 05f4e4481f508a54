package testutil

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/gocr/gocr/core"
)

// Refused checks that check mode lists a problem saying want for the image opts.Dir, that a
// restore refuses it in the same words as an image that does not fit this machine
// (core.ErrIncompatible), and that it left none of pids behind.
func Refused(t testing.TB, opts core.RestoreOptions, want string, pids ...int) {
	t.Helper()
	rep, err := core.Check(opts.Dir)
	var failed *core.CheckFailedError
	if errors.As(err, &failed) {
		rep, err = failed.Report, nil
	}
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	found := false
	for _, p := range rep.Problems {
		found = found || strings.Contains(p.String(), want)
	}
	if !found {
		t.Errorf("check mode found %v, want a problem saying %q", rep.Problems, want)
	}
	_, err = core.Restore(context.Background(), opts)
	if !errors.Is(err, core.ErrIncompatible) || !strings.Contains(err.Error(), want) {
		t.Fatalf("restore: %v, want a refusal saying %q, as an image that does not fit this machine", err, want)
	}
	for _, pid := range pids {
		if Alive(pid) {
			t.Fatalf("the refused restore left pid %d behind", pid)
		}
	}
}
