package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/gocr/gocr/core"
)

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%s: unexpected argument %q", cmd.Name(), args[0])}
	}
	return nil
}

func isCobraUsage(err error) bool {
	var ue usageError
	if errors.As(err, &ue) {
		return true
	}
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "invalid argument", "flag needs an argument", "accepts "} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// progress draws a one-line progress report on a terminal (bytes done, MB/s, time left),
// and nothing elsewhere or with --json.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	what  string
	last  time.Time
	shown bool
	start time.Time // of the stage being shown
	stage string
	now   func() time.Time
}

func newProgress(w io.Writer, what string, json bool) *progress {
	p := &progress{w: w, what: what, now: time.Now}
	if f, ok := w.(*os.File); ok && !json {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) update(pr core.Progress) {
	if !p.tty || pr.Total == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if pr.Stage != p.stage {
		p.stage, p.start = pr.Stage, now
	}
	if now.Sub(p.last) < 100*time.Millisecond && pr.Done < pr.Total {
		return
	}
	p.last = now
	rate := ""
	if secs := now.Sub(p.start).Seconds(); secs > 0 && pr.Done > 0 {
		bps := float64(pr.Done) / secs
		left := time.Duration(float64(pr.Total-min(pr.Done, pr.Total)) / bps * float64(time.Second))
		rate = fmt.Sprintf(", %.0f MB/s, %s left", bps/1e6, left.Round(time.Second))
	}
	fmt.Fprintf(p.w, "\r%s: %s %s / %s (%d%%%s)  ", p.what, pr.Stage, humanBytes(pr.Done), humanBytes(pr.Total), pr.Done*100/pr.Total, rate)
	p.shown = true
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
