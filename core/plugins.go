package core

import (
	"context"
	"fmt"
	"os"

	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/pluginhost"
	"github.com/gocr/gocr/core/internal/tracer"
)

// This file connects plugins to the dump and the restore: the mappings they claim, and the
// host services they may call back (pluginhost.Services).

// dumpClaimedVMAs hands the claimed mappings of a process to their plugins, in address
// order, outside the tracer thread: a plugin may call back the host, which uses it.
func (d *dumper) dumpClaimedVMAs(ctx context.Context, p *procDump) error {
	for _, v := range p.img.Vmas {
		if v.Kind != imagepb.VMAKind_VMA_KIND_PLUGIN {
			continue
		}
		pl, err := d.host.ClaimMapping(v.Path, uint32((v.Rdev>>8)&0xfff), v.Rdev != 0)
		if err != nil {
			return err
		}
		blob, err := d.host.DumpVMA(ctx, pl, vmaOf(int(p.img.Pid), v))
		if err != nil {
			return err
		}
		v.PluginBlob = blob
		d.files.markUsed(pl.Name)
	}
	return nil
}

func vmaOf(pid int, v *imagepb.VMA) pluginhost.VMA {
	return pluginhost.VMA{Pid: pid, Start: v.Start, End: v.End, Prot: v.Prot, Shared: v.Shared, Pgoff: v.Pgoff, Path: v.Path, Rdev: v.Rdev}
}

// restoreClaimedVMAs asks the plugins to make their mappings of a process again, in address
// order, once the rest of its memory is in place.
func (r *restorer) restoreClaimedVMAs(p *procRestore) error {
	for _, v := range p.img.Vmas {
		if v.Kind != imagepb.VMAKind_VMA_KIND_PLUGIN {
			continue
		}
		pl, err := r.host.ClaimMapping(v.Path, uint32((v.Rdev>>8)&0xfff), v.Rdev != 0)
		if err == nil && (pl == nil || pl.Name != v.Plugin) {
			err = fmt.Errorf("mapping %#x of %s: plugin %s does not claim it here", v.Start, v.Path, v.Plugin)
		}
		if err == nil {
			err = r.host.RestoreVMA(r.ctx, pl, vmaOf(int(p.img.Pid), v), v.PluginBlob)
		}
		if err != nil {
			return fmt.Errorf("restore pid %d: %w", p.img.Pid, err)
		}
	}
	return nil
}

// memory is what both operations do alike for plugins: read and write a process's memory,
// run an ioctl on a dup of its fd from the tracer thread, dup its fd. The pids plugins give
// are turned into gocr's view by host (nil: they are already).
type memory struct{ host func(int) int }

func (m memory) hostPid(pid int) int {
	if m.host == nil {
		return pid
	}
	return m.host(pid)
}

func (m memory) ReadMemory(pid int, addr uint64, n int) ([]byte, error) {
	pid = m.hostPid(pid)
	b := make([]byte, n)
	if n == 0 {
		return b, nil
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid)) // works on mappings without PROT_READ too
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.ReadAt(b, int64(addr)); err != nil {
		return nil, fmt.Errorf("read pid %d memory at %#x: %w", pid, addr, err)
	}
	return b, nil
}

func (m memory) WriteMemory(pid int, addr uint64, b []byte) error {
	pid = m.hostPid(pid)
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(b, int64(addr)); err != nil {
		return fmt.Errorf("write pid %d memory at %#x: %w", pid, addr, err)
	}
	return nil
}

func (m memory) Dup(pid, fd int) (int, error) {
	pid = m.hostPid(pid)
	pidfd, err := linux.PidfdOpen(pid)
	if err != nil {
		return -1, err
	}
	defer linux.Close(pidfd)
	return linux.PidfdGetfd(pidfd, fd)
}

// tracerIoctl runs the ioctl on a dup of the process's fd from the tracer thread, with the
// buffers its argument points to in gocr's memory.
func tracerIoctl(th *tracer.Thread, m memory, pid, fd int, request uint64, arg []byte, bufs []pluginhost.IoctlBuffer) (int64, []byte, [][]byte, error) {
	if th == nil {
		return 0, nil, nil, fmt.Errorf("no process is traced yet")
	}
	dup, err := m.Dup(pid, fd)
	if err != nil {
		return 0, nil, nil, err
	}
	defer linux.Close(dup)
	out := append([]byte(nil), arg...)
	data, ats := make([][]byte, len(bufs)), make([]int, len(bufs))
	for i, b := range bufs {
		data[i], ats[i] = append([]byte(nil), b.Data...), b.At
	}
	var ret int64
	err = th.Do(func() error {
		var err error
		ret, err = linux.IoctlPointing(dup, request, out, data, ats)
		return err
	})
	return ret, out, data, err
}

// dumpServices are the host services during a dump.
type dumpServices struct {
	memory
	d *dumper
}

func (s *dumpServices) Syscall(pid int, nr int64, args []uint64) (uint64, error) {
	p := s.d.procs[pid]
	if p == nil || p.t == nil {
		return 0, fmt.Errorf("pid %d is not a frozen process of the dump", pid)
	}
	var ret uint64
	err := s.d.thread.Do(func() error {
		var err error
		ret, err = p.t.Syscall(int(nr), args...)
		return err
	})
	return ret, err
}

func (s *dumpServices) TracerIoctl(pid, fd int, request uint64, arg []byte, bufs []pluginhost.IoctlBuffer) (int64, []byte, [][]byte, error) {
	return tracerIoctl(s.d.thread, s.memory, pid, fd, request, arg, bufs)
}

func (s *dumpServices) PutBlob(plugin, name string, data []byte) error {
	df, err := s.d.w.CreateData(image.BlobName(plugin, name), int64(len(data)))
	if err != nil {
		return err
	}
	if _, err := df.Write(data); err != nil {
		return err
	}
	return df.Close()
}

func (s *dumpServices) GetBlob(plugin, name string) ([]byte, error) {
	return nil, fmt.Errorf("blobs are read at restore")
}

func (s *dumpServices) CreateBlobFile(plugin, name string) (*os.File, error) {
	return s.d.w.CreateRaw(image.BlobName(plugin, name))
}

func (s *dumpServices) OpenBlobFile(plugin, name string) (*os.File, error) {
	return nil, fmt.Errorf("blobs are read at restore")
}

// restoreServices are the host services during a restore.
type restoreServices struct {
	memory
	r *restorer
}

func (s *restoreServices) Syscall(pid int, nr int64, args []uint64) (uint64, error) {
	p := s.r.procs[int32(pid)]
	if p == nil || p.t == nil {
		return 0, fmt.Errorf("pid %d is not a process being restored", pid)
	}
	var ret uint64
	err := s.r.thread.Do(func() error {
		var err error
		ret, err = p.t.Syscall(int(nr), args...)
		return err
	})
	return ret, err
}

func (s *restoreServices) TracerIoctl(pid, fd int, request uint64, arg []byte, bufs []pluginhost.IoctlBuffer) (int64, []byte, [][]byte, error) {
	return tracerIoctl(s.r.thread, s.memory, pid, fd, request, arg, bufs)
}

func (s *restoreServices) PutBlob(plugin, name string, data []byte) error {
	return fmt.Errorf("blobs are stored at dump")
}

func (s *restoreServices) GetBlob(plugin, name string) ([]byte, error) {
	return readBlob(s.r.c, plugin, name)
}

// blobPath is where plugin's blob name is in image c, which must list it.
func blobPath(c *image.Checkpoint, plugin, name string) (string, error) {
	n := image.BlobName(plugin, name)
	if _, ok := c.Entry(n); !ok {
		return "", fmt.Errorf("no blob %q of plugin %s in the image", name, plugin)
	}
	return c.Path(n), nil
}

// readBlob and openBlob give a plugin its blob of image c (its checksums were verified with
// the rest of the image).
func readBlob(c *image.Checkpoint, plugin, name string) ([]byte, error) {
	p, err := blobPath(c, plugin, name)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}

func openBlob(c *image.Checkpoint, plugin, name string) (*os.File, error) {
	p, err := blobPath(c, plugin, name)
	if err != nil {
		return nil, err
	}
	return os.Open(p)
}

func (s *restoreServices) CreateBlobFile(plugin, name string) (*os.File, error) {
	return nil, fmt.Errorf("blobs are stored at dump")
}

func (s *restoreServices) OpenBlobFile(plugin, name string) (*os.File, error) {
	return openBlob(s.r.c, plugin, name)
}

// checkServices are the host services in check mode: a plugin may read its blobs, to judge
// whether a restore here would work; nothing touches a process.
type checkServices struct{ c *image.Checkpoint }

var errCheckMode = fmt.Errorf("check mode touches no process")

func (checkServices) ReadMemory(int, uint64, int) ([]byte, error) { return nil, errCheckMode }
func (checkServices) WriteMemory(int, uint64, []byte) error       { return errCheckMode }
func (checkServices) Syscall(int, int64, []uint64) (uint64, error) {
	return 0, errCheckMode
}
func (checkServices) TracerIoctl(int, int, uint64, []byte, []pluginhost.IoctlBuffer) (int64, []byte, [][]byte, error) {
	return 0, nil, nil, errCheckMode
}
func (checkServices) Dup(int, int) (int, error)            { return -1, errCheckMode }
func (checkServices) PutBlob(string, string, []byte) error { return errCheckMode }
func (checkServices) CreateBlobFile(string, string) (*os.File, error) {
	return nil, errCheckMode
}

func (s checkServices) GetBlob(plugin, name string) ([]byte, error) {
	return readBlob(s.c, plugin, name)
}

func (s checkServices) OpenBlobFile(plugin, name string) (*os.File, error) {
	return openBlob(s.c, plugin, name)
}
