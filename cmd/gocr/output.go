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

// progress draws a one-line progress report on a terminal, and nothing elsewhere.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	what  string
	last  time.Time
	shown bool
}

func newProgress(w io.Writer, what string) *progress {
	p := &progress{w: w, what: what}
	if f, ok := w.(*os.File); ok {
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
	if time.Since(p.last) < 100*time.Millisecond && pr.Done < pr.Total {
		return
	}
	p.last = time.Now()
	fmt.Fprintf(p.w, "\r%s: %s %s / %s (%d%%)  ", p.what, pr.Stage, humanBytes(pr.Done), humanBytes(pr.Total), pr.Done*100/pr.Total)
	p.shown = true
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
