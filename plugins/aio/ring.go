package aio

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"syscall"

	"github.com/gocr/gocr/sdk"
)

// ringHeader is struct aio_ring (fs/aio.c), 32 bytes, followed by nr struct io_event.
type ringHeader struct {
	ID, Nr, Head, Tail, Magic, CompatFeatures, IncompatFeatures, HeaderLength uint32
}

const (
	ringHeaderSize = 32
	ioEventSize    = 32 // struct io_event {u64 data, obj; s64 res, res2}
	iocbSize       = 64 // struct iocb (linux/aio_abi.h)
	ringMagic      = 0xa10a10a1
	pageSize       = 4096
	iocbCmdPwrite  = 1
	// x86_64 syscall numbers (asm/unistd_64.h).
	sysIoSetup   = 206
	sysIoDestroy = 207
	sysIoSubmit  = 209
)

func parseHeader(b []byte) ringHeader {
	var h ringHeader
	f := []*uint32{&h.ID, &h.Nr, &h.Head, &h.Tail, &h.Magic, &h.CompatFeatures, &h.IncompatFeatures, &h.HeaderLength}
	for i, p := range f {
		*p = binary.LittleEndian.Uint32(b[4*i:])
	}
	return h
}

// check says whether a ring of n bytes with this header is one gocr can make again.
func (h ringHeader) check(n uint64) error {
	switch {
	case h.Magic != ringMagic || h.HeaderLength != ringHeaderSize || h.CompatFeatures != 1 || h.IncompatFeatures != 0:
		return fmt.Errorf("not an AIO ring gocr knows (magic %#x, header %d bytes, features %d/%d)", h.Magic, h.HeaderLength, h.CompatFeatures, h.IncompatFeatures)
	case n%pageSize != 0 || uint64(h.Nr) != (n-ringHeaderSize)/ioEventSize:
		return fmt.Errorf("AIO ring of %d bytes holding %d events", n, h.Nr)
	case h.Head >= h.Nr || h.Tail >= h.Nr:
		return fmt.Errorf("AIO ring head %d or tail %d beyond its %d events", h.Head, h.Tail, h.Nr)
	}
	return nil
}

// setupSize is what to ask io_setup for so that the kernel makes a ring of n bytes: it
// raises the request to 4 per possible CPU, doubles it, adds 2 and rounds the ring up to
// pages (fs/aio.c), so (events the ring holds - 2) / 2 gives that ring, with the most
// requests allowed.
func setupSize(n uint64) uint64 {
	return ((n-ringHeaderSize)/ioEventSize - 2) / 2
}

// Plugin saves and restores AIO rings.
type Plugin struct {
	host sdk.Host
}

func (p *Plugin) Name() string { return "aio" }

// Claims: the ring's mapping shows as "/[aio] (deleted)".
func (p *Plugin) Claims() sdk.Claims { return sdk.Claims{MappingPrefixes: []string{"/[aio]"}} }

func (p *Plugin) UseHost(h sdk.Host) { p.host = h }

func (p *Plugin) DumpFile(ctx context.Context, f sdk.File) ([]byte, error) {
	return nil, fmt.Errorf("the aio plugin claims no file (fd %d of pid %d)", f.Fd, f.Pid)
}

func (p *Plugin) RestoreFile(ctx context.Context, f sdk.File, blob []byte) (*os.File, error) {
	return nil, fmt.Errorf("the aio plugin claims no file (fd %d of pid %d)", f.Fd, f.Pid)
}

// DumpVMA saves the whole ring: header, and every event slot.
func (p *Plugin) DumpVMA(ctx context.Context, v sdk.VMA) ([]byte, error) {
	n := v.End - v.Start
	ring, err := p.host.ReadMemory(ctx, v.Pid, v.Start, int(n))
	if err != nil {
		return nil, fmt.Errorf("read AIO ring %#x: %w", v.Start, err)
	}
	if err := parseHeader(ring).check(n); err != nil {
		return nil, fmt.Errorf("AIO ring %#x of pid %d: %w", v.Start, v.Pid, err)
	}
	return ring, nil
}

// RestoreVMA makes the ring again inside the process, at its old address.
func (p *Plugin) RestoreVMA(ctx context.Context, v sdk.VMA, blob []byte) error {
	n := v.End - v.Start
	if uint64(len(blob)) != n || n < ringHeaderSize {
		return fmt.Errorf("AIO ring %#x: %d bytes saved for a mapping of %d", v.Start, len(blob), n)
	}
	old := parseHeader(blob)
	if err := old.check(n); err != nil {
		return fmt.Errorf("AIO ring %#x: %w", v.Start, err)
	}
	r := &restore{Plugin: p, ctx: ctx, pid: v.Pid}
	err := r.run(v, old, blob)
	r.cleanup()
	if err != nil {
		return fmt.Errorf("restore AIO ring %#x of pid %d: %w", v.Start, v.Pid, err)
	}
	return nil
}

// restore is one ring being made again, with the scratch page and fd it uses in the process.
type restore struct {
	*Plugin
	ctx     context.Context
	pid     int
	scratch uint64 // a mapping of ours in the process
	devnull uint64 // /dev/null open in the process, +1 (0: none)
	ring    uint64 // the new ring, while not yet moved
}

const scratchSize = 64 << 10

func (r *restore) call(what string, nr int64, args ...uint64) (uint64, error) {
	ret, err := r.host.Syscall(r.ctx, r.pid, nr, args...)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	return ret, nil
}

func (r *restore) run(v sdk.VMA, old ringHeader, saved []byte) error {
	n := v.End - v.Start
	var err error
	if r.scratch, err = r.call("scratch mapping", syscall.SYS_MMAP, 0, scratchSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS, ^uint64(0), 0); err != nil {
		return err
	}
	// io_setup writes the context id, which is the ring's address, at scratch.
	if err := r.host.WriteMemory(r.ctx, r.pid, r.scratch, make([]byte, 8)); err != nil {
		return err
	}
	if _, err := r.call("io_setup", sysIoSetup, setupSize(n), r.scratch); err != nil {
		return err
	}
	id, err := r.host.ReadMemory(r.ctx, r.pid, r.scratch, 8)
	if err != nil {
		return err
	}
	r.ring = binary.LittleEndian.Uint64(id)
	hb, err := r.host.ReadMemory(r.ctx, r.pid, r.ring, ringHeaderSize)
	if err != nil {
		return err
	}
	if h := parseHeader(hb); h.Nr != old.Nr {
		return fmt.Errorf("the kernel made a ring of %d events, the image has %d (another number of CPUs?)", h.Nr, old.Nr)
	}
	// Bring the kernel's tail to the old one with writes of one byte to /dev/null, which
	// complete at once; between batches, mark them read so that slots stay free.
	steps := uint64(old.Tail)
	if old.Tail < old.Head {
		steps += uint64(old.Nr) // the old tail had wrapped around
	}
	if steps > 0 {
		if err := r.advance(steps, setupSize(n)); err != nil {
			return err
		}
	}
	// The completions the process had not read yet, and its head.
	if err := r.host.WriteMemory(r.ctx, r.pid, r.ring+ringHeaderSize, saved[ringHeaderSize:]); err != nil {
		return err
	}
	head := make([]byte, 4)
	binary.LittleEndian.PutUint32(head, old.Head)
	if err := r.host.WriteMemory(r.ctx, r.pid, r.ring+8, head); err != nil {
		return err
	}
	hb, err = r.host.ReadMemory(r.ctx, r.pid, r.ring, ringHeaderSize)
	if err != nil {
		return err
	}
	if h := parseHeader(hb); h.Head != old.Head || h.Tail != old.Tail {
		return fmt.Errorf("ring head %d tail %d, want %d and %d", h.Head, h.Tail, old.Head, old.Tail)
	}
	// Onto the old address: the kernel follows the move, and the context id is the address.
	if _, err := r.call("move the ring", syscall.SYS_MREMAP, r.ring, n, n, 1|2 /* MREMAP_MAYMOVE|MREMAP_FIXED */, v.Start); err != nil {
		return err
	}
	r.ring = 0
	if v.Prot != syscall.PROT_READ|syscall.PROT_WRITE {
		if _, err := r.call("protect the ring", syscall.SYS_MPROTECT, v.Start, n, uint64(v.Prot)); err != nil {
			return err
		}
	}
	return nil
}

// advance submits steps one-byte writes to /dev/null, at most batch at a time.
func (r *restore) advance(steps, batch uint64) error {
	path := r.scratch + scratchSize - 16
	if err := r.host.WriteMemory(r.ctx, r.pid, path, []byte("/dev/null\x00")); err != nil {
		return err
	}
	atFdcwd := sdk.AtFdcwd
	fd, err := r.call("open /dev/null", syscall.SYS_OPENAT, atFdcwd, path, syscall.O_WRONLY|syscall.O_CLOEXEC)
	if err != nil {
		return err
	}
	r.devnull = fd + 1
	// Layout in the scratch mapping: the byte written, then the iocbs, then their pointers.
	maxBatch := (scratchSize - 64 - 16) / (iocbSize + 8)
	batch = min(batch, uint64(maxBatch))
	iocbs, ptrs := r.scratch+64, r.scratch+64+batch*iocbSize
	for done := uint64(0); done < steps; {
		k := min(batch, steps-done)
		buf := make([]byte, k*(iocbSize+8))
		for i := uint64(0); i < k; i++ {
			cb := buf[i*iocbSize:]
			binary.LittleEndian.PutUint16(cb[16:], iocbCmdPwrite) // aio_lio_opcode
			binary.LittleEndian.PutUint32(cb[20:], uint32(fd))    // aio_fildes
			binary.LittleEndian.PutUint64(cb[24:], r.scratch)     // aio_buf
			binary.LittleEndian.PutUint64(cb[32:], 1)             // aio_nbytes
			binary.LittleEndian.PutUint64(buf[k*iocbSize+i*8:], iocbs+i*iocbSize)
		}
		if err := r.host.WriteMemory(r.ctx, r.pid, iocbs, buf[:k*iocbSize]); err != nil {
			return err
		}
		if err := r.host.WriteMemory(r.ctx, r.pid, ptrs, buf[k*iocbSize:]); err != nil {
			return err
		}
		got, err := r.call("io_submit", sysIoSubmit, r.ring, k, ptrs)
		if err != nil {
			return err
		}
		if got != k {
			return fmt.Errorf("io_submit took %d of %d requests", got, k)
		}
		done += k
		// Mark them read: head = tail.
		hb, err := r.host.ReadMemory(r.ctx, r.pid, r.ring, ringHeaderSize)
		if err != nil {
			return err
		}
		if err := r.host.WriteMemory(r.ctx, r.pid, r.ring+8, hb[12:16]); err != nil {
			return err
		}
	}
	return nil
}

// cleanup closes what run opened in the process, and drops a ring it could not move.
func (r *restore) cleanup() {
	if r.ring != 0 {
		r.host.Syscall(r.ctx, r.pid, sysIoDestroy, r.ring)
	}
	if r.devnull != 0 {
		r.host.Syscall(r.ctx, r.pid, syscall.SYS_CLOSE, r.devnull-1)
	}
	if r.scratch != 0 {
		r.host.Syscall(r.ctx, r.pid, syscall.SYS_MUNMAP, r.scratch, scratchSize)
	}
}
