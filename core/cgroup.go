package core

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/procfs"
)

// Cgroup membership, as CRIU's default (--manage-cgroups=soft): each restored process goes
// back into the cgroups it was in, made again where they are gone (without their settings);
// a hierarchy not mounted here is left as gocr's.

// collectCgroups records the process's cgroups.
func collectCgroups(pid int, img *imagepb.Process) error {
	cgs, err := procfs.ReadCgroups(pid)
	if err != nil {
		return fmt.Errorf("read cgroups: %w", err)
	}
	for _, c := range cgs {
		img.Cgroups = append(img.Cgroups, &imagepb.Cgroup{Controllers: c.Controllers, Path: strings.TrimSuffix(c.Path, " (deleted)")})
	}
	return nil
}

// cgroupDir is where a hierarchy's path is in this mount namespace, or "" if the hierarchy
// is not mounted here (or only a part of it that does not hold the path).
func cgroupDir(mounts []procfs.CgroupMount, c *imagepb.Cgroup) string {
	for _, m := range mounts {
		if c.Controllers == "" != m.V2 {
			continue
		}
		if !m.V2 {
			all := true
			for _, ctl := range strings.Split(c.Controllers, ",") {
				all = all && slices.Contains(m.Options, ctl)
			}
			if !all {
				continue
			}
		}
		rel, ok := strings.CutPrefix(c.Path, m.Root)
		if !ok || (rel != "" && m.Root != "/" && rel[0] != '/') {
			continue
		}
		return filepath.Join(m.Dir, rel)
	}
	return ""
}

// joinCgroups puts every restored process into its cgroups, before any of them runs. The
// cgroups it had to make are recorded in r.cgroupsMade, so that a failed restore removes them.
func (r *restorer) joinCgroups() error {
	mounts, err := procfs.CgroupMounts()
	if err != nil {
		return fmt.Errorf("restore: list cgroup mounts: %w", err)
	}
	mine, err := procfs.ReadCgroups(os.Getpid())
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	for _, pid := range r.order {
		for _, c := range r.procs[pid].img.Cgroups {
			if slices.Contains(mine, procfs.Cgroup{Controllers: c.Controllers, Path: c.Path}) {
				continue // inherited from gocr already
			}
			dir := cgroupDir(mounts, c)
			if dir == "" || strings.Contains(c.Path, "/..") {
				continue
			}
			if err := r.makeCgroup(dir); err != nil {
				return fmt.Errorf("restore pid %d: make cgroup %s: %w", pid, dir, err)
			}
			if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(r.procs[pid].host)), 0); err != nil {
				return fmt.Errorf("restore pid %d: join cgroup %s: %w", pid, dir, err)
			}
		}
	}
	return nil
}

// makeCgroup makes dir and any missing parent, remembering what it made.
func (r *restorer) makeCgroup(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := r.makeCgroup(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	r.cgroupsMade = append(r.cgroupsMade, dir)
	return nil
}

// removeCgroupsMade removes the cgroups a failed restore made, deepest first (their
// processes are gone by then).
func (r *restorer) removeCgroupsMade() {
	for i := len(r.cgroupsMade) - 1; i >= 0; i-- {
		os.Remove(r.cgroupsMade[i])
	}
	r.cgroupsMade = nil
}
