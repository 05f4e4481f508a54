package core

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/pluginhost"
	"github.com/gocr/gocr/core/internal/procfs"
)

// ErrCheckFailed means check mode found that a restore here would fail.
var ErrCheckFailed = errors.New("a restore here would fail")

// Problem is one reason a restore would fail.
type Problem struct {
	What   string `json:"what"`   // "pid 4121", "/usr/lib/libc.so.6", "memory", "CPU"
	Detail string `json:"detail"` // what is wrong
	Hint   string `json:"hint,omitempty"`
}

func (p Problem) String() string {
	s := p.What + ": " + p.Detail
	if p.Hint != "" {
		s += " (" + p.Hint + ")"
	}
	return s
}

// CheckReport is what check mode found.
type CheckReport struct {
	Dir       string    `json:"images_dir"`
	Kind      string    `json:"kind"`
	Processes int       `json:"processes"`
	Memory    uint64    `json:"memory_bytes"`    // to be restored
	Available uint64    `json:"available_bytes"` // MemAvailable here
	Problems  []Problem `json:"problems"`
}

// CheckFailedError carries the problems check mode found.
type CheckFailedError struct{ Report *CheckReport }

func (e *CheckFailedError) Error() string {
	var s []string
	for _, p := range e.Report.Problems {
		s = append(s, p.String())
	}
	return fmt.Sprintf("check of %s: %d problem(s): %s", e.Report.Dir, len(s), strings.Join(s, "; "))
}

func (e *CheckFailedError) Unwrap() error { return ErrCheckFailed }

// IsCheckOnly reports whether dir holds a check-only image.
func IsCheckOnly(dir string) (bool, error) {
	c, err := image.Open(dir)
	if err != nil {
		return false, err
	}
	return c.Index.Kind == imagepb.Kind_KIND_CHECK_ONLY, nil
}

// Check tells, without creating a process or changing anything, whether the image in dir
// could be restored here, and reports every problem it finds. It returns a
// *CheckFailedError (errors.Is ErrCheckFailed) with the report when there are problems, and
// another error when the image itself cannot be read.
func Check(dir string) (*CheckReport, error) {
	c, err := image.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	if err := c.VerifyData(); err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	rep := &CheckReport{Dir: dir, Kind: strings.TrimPrefix(strings.ToLower(c.Index.Kind.String()), "kind_"), Processes: len(c.Tree.Processes)}
	add := func(what, hint, format string, args ...any) {
		rep.Problems = append(rep.Problems, Problem{What: what, Detail: fmt.Sprintf(format, args...), Hint: hint})
	}
	if c.Index.Kind == imagepb.Kind_KIND_PRE_DUMP {
		add("image", "dump against it (--prev-images-dir) and check that image", "a pre-dump is not restored itself: its memory was read while the tree ran")
	}
	if c.Index.Kind == imagepb.Kind_KIND_TRACKED {
		add("image", "write it into the live process with gocr apply, or restore a full image", "a tracked dump holds only the pages written since the memory tracking was reset")
	}
	if _, err := loadParents(c); err != nil {
		add("parent image", "keep the images an incremental image was taken against where they were", "%v", err)
	}

	// The CPU must take the image's XSTATE as it is.
	size, features := linux.XStateLayout()
	if cpu := c.Tree.Cpu; cpu.XstateSize != size || cpu.Xfeatures != features {
		add("CPU", "restore on a CPU like the one of the dump",
			"XSTATE of %d bytes with features %#x in the image, %d bytes with features %#x here", cpu.XstateSize, cpu.Xfeatures, size, features)
	}
	// The vdso is moved, not rebuilt: the kernel must be the same.
	if rel := linux.KernelRelease(); c.Index.KernelRelease != rel {
		add("kernel", "restore on the kernel the image was taken on", "image taken on %s, this is %s", c.Index.KernelRelease, rel)
	}
	for _, f := range missingKernelFeatures() {
		add("kernel", f.Cost, "%s is missing", f.Name)
	}
	for _, p := range c.Procs {
		if len(p.PosixTimers) == 0 {
			continue
		}
		for _, f := range Features() {
			if strings.HasPrefix(f.Name, "timer_create") && !f.Present {
				add(fmt.Sprintf("pid %d", p.Pid), "restore on Linux 6.17 or later", "has POSIX timers and %s is missing", f.Name)
			}
		}
	}
	// Every PID and TID must be free, unless the tree gets a pid namespace of its own.
	for _, pe := range c.Tree.Processes {
		if c.Tree.Namespaces != nil && c.Tree.Namespaces.Pid {
			break
		}
		for _, tid := range pe.Threads {
			if _, err := os.Stat(procfs.Path(int(tid), "")); err == nil {
				comm, _ := procfs.ReadFile(int(tid), "comm")
				what := fmt.Sprintf("pid %d", pe.Pid)
				if tid != pe.Pid {
					what += fmt.Sprintf(" (thread %d)", tid)
				}
				add(what, "end that process, restore elsewhere, or restore with --new-pidns (a pid namespace of its own)", "%d is in use by %q", tid, strings.TrimSpace(string(comm)))
			}
		}
	}
	// Enough memory for the pages to come back.
	rep.Memory = imageMemory(c)
	if avail, err := memAvailable(); err == nil {
		rep.Available = avail
		if rep.Memory > avail {
			add("memory", "free memory or restore on a larger machine", "the image needs %d MiB, %d MiB are available", rep.Memory>>20, avail>>20)
		}
	}
	checkPlugins(c, add)
	environmentProblems(c, add)
	// Binaries, libraries and files: present, and binaries and libraries the same.
	for _, mf := range c.Tree.MappedFiles {
		checkMappedFile(mf, add)
	}
	rep.Problems = uniqProblems(rep.Problems)
	if len(rep.Problems) > 0 {
		return rep, &CheckFailedError{Report: rep}
	}
	return rep, nil
}

func checkMappedFile(mf *imagepb.MappedFile, add func(what, hint, format string, args ...any)) {
	f, err := os.Open(mf.Path)
	if err != nil {
		add(mf.Path, "", "mapped file is missing")
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		add(mf.Path, "", "cannot stat: %v", err)
		return
	}
	if uint64(st.Size()) != mf.Size {
		add(mf.Path, "install the same version as where the dump was taken", "size %d here, %d in the image", st.Size(), mf.Size)
		return
	}
	if !mf.HasCrc32C {
		return
	}
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	if _, err := io.Copy(h, f); err != nil {
		add(mf.Path, "", "cannot read: %v", err)
		return
	}
	if h.Sum32() != mf.Crc32C {
		add(mf.Path, "install the same version as where the dump was taken", "content differs from the image (checksum %08x here, %08x in the image)", h.Sum32(), mf.Crc32C)
	}
}

func uniqProblems(ps []Problem) []Problem {
	seen := map[Problem]bool{}
	var out []Problem
	for _, p := range ps {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// memAvailable reads MemAvailable from /proc/meminfo.
func memAvailable() (uint64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no MemAvailable in /proc/meminfo")
}

// checkPlugins checks that the plugins the image needs are here, and asks each whether a
// restore here would work.
func checkPlugins(c *image.Checkpoint, add func(what, hint, format string, args ...any)) {
	var here []string
	for _, name := range c.Tree.Plugins {
		if _, err := pluginhost.Find(name, PluginDirs(nil)); err != nil {
			add("plugin "+name, "install gocr-plugin-"+name+" next to gocr or in $GOCR_PLUGIN_DIR", "the image needs it: %v", err)
			continue
		}
		here = append(here, name)
	}
	if len(here) == 0 {
		return
	}
	host, err := pluginhost.Start(context.Background(), here, PluginDirs(nil), "check", 0, checkServices{c})
	if err != nil {
		add("plugins", "", "%v", err)
		return
	}
	defer host.Close(true)
	var pids []int
	for _, pe := range c.Tree.Processes {
		pids = append(pids, int(pe.Pid))
	}
	problems, err := host.Check(context.Background(), pids)
	if err != nil {
		add("plugins", "", "%v", err)
	}
	for _, p := range problems {
		add("plugins", "", "%s", p)
	}
}
