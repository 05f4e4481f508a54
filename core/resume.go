package core

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/procfs"
)

// Resume lets a stopped tree (left so by a dump or a restore with LeaveStopped) run: it sends
// SIGCONT to the process and all its descendants, and returns how many it woke.
func Resume(root int) (int, error) {
	queue, n := []int{root}, 0
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		kids, err := procfs.Children(pid)
		if errors.Is(err, fs.ErrNotExist) {
			if pid == root {
				return 0, fmt.Errorf("resume pid %d: %w", pid, ErrNoProcess)
			}
			continue
		}
		if err != nil {
			return n, fmt.Errorf("resume pid %d: %w", pid, err)
		}
		if err := linux.Kill(pid, linux.SIGCONT); err != nil {
			if errors.Is(err, linux.EPERM) {
				return n, fmt.Errorf("resume pid %d: %w", pid, ErrPermission)
			}
			return n, fmt.Errorf("resume pid %d: %w", pid, err)
		}
		n++
		queue = append(queue, kids...)
	}
	return n, nil
}

// TerminalOf returns the path of the terminal fd is on, or "" when it is not a terminal.
func TerminalOf(fd int) string { return linux.TerminalOf(fd) }
