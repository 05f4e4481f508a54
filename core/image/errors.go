package image

import (
	"errors"
	"fmt"
	"regexp"
)

var (
	// ErrExists means the images directory already holds something.
	ErrExists = errors.New("images directory in use")
	// ErrCorrupt means the image is damaged or was not written by gocr; nothing in it is used.
	ErrCorrupt = errors.New("image is damaged")
	// ErrVersion means the image has a format version this gocr cannot read.
	ErrVersion = errors.New("unsupported image format version")
	// ErrNoImage means the directory holds no image.
	ErrNoImage = errors.New("no image")
)

// CorruptError names the file of the image that is wrong and what is wrong with it.
type CorruptError struct {
	File   string
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("image file %s: %s", e.File, e.Reason)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

func corrupt(file, format string, args ...any) error {
	return &CorruptError{File: file, Reason: fmt.Sprintf(format, args...)}
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}\.img$`)

// checkName admits only the plain file names gocr writes, so an index cannot point outside
// its directory.
func checkName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("bad image file name %q", name)
	}
	return nil
}
