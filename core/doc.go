// Package core checkpoints and restores trees of Linux processes: Dump writes a running tree
// to an image directory, Restore brings it back with the same PIDs, memory, files and signals.
// It returns errors and never prints; the CLI in cmd/gocr owns output. Kernel calls go through
// core/internal/linux only.
package core
