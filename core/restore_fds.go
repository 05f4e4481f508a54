package core

import (
	"encoding/binary"
	"fmt"

	"github.com/gocr/gocr/core/image/imagepb"
	"github.com/gocr/gocr/core/internal/linux"
)

// stubPidfd is where every process of a restore has a pidfd of gocr until its own fds are
// installed: the stub is started with it, and each process is cloned with a copy of its
// parent's fds. Through it the process takes fds from gocr with pidfd_getfd (same open file
// description, flags and offset); it works from a pid namespace where gocr has no pid.
const stubPidfd = 3

// gocrPidfd returns the number of the process's pidfd of gocr.
func (r *restorer) gocrPidfd(p *procRestore) (uint64, error) {
	if p.pidfd == ^uint64(0) {
		return 0, fmt.Errorf("its pidfd of gocr is closed already")
	}
	return p.pidfd, nil
}

// installTemp gives the process a dup of our fd at the lowest free number (close-on-exec).
func (r *restorer) installTemp(p *procRestore, ours int) (uint64, error) {
	pidfd, err := r.gocrPidfd(p)
	if err != nil {
		return 0, err
	}
	return r.call(p, "take fd from gocr", linux.SysPidfdGetfd, pidfd, uint64(ours), 0)
}

// installFds closes whatever the stub left open and installs every dumped fd at its number.
func (r *restorer) installFds(p *procRestore) error {
	if err := r.openOwnTTY(p); err != nil {
		return err
	}
	fds := p.img.Fds
	maxFd := int32(2)
	for _, f := range fds {
		maxFd = max(maxFd, f.Fd)
	}
	// Move our pidfd above every fd number to be installed, and close everything else.
	pidfd, err := r.gocrPidfd(p)
	if err != nil {
		return err
	}
	high, err := r.call(p, "move pidfd", linux.SysFcntl, pidfd, linux.FDupfdCloexec, uint64(maxFd+1))
	if err != nil {
		return err
	}
	if _, err := r.call(p, "close stub fds", linux.SysCloseRange, 0, high-1, 0); err != nil {
		return err
	}
	if high < ^uint64(0) {
		if _, err := r.call(p, "close stub fds", linux.SysCloseRange, high+1, ^uint64(0)>>32, 0); err != nil {
			return err
		}
	}
	p.pidfd = high
	// Ascending: the lowest free number is never above the one being installed.
	for _, f := range fds {
		ours, ok := r.files[f.FileId]
		if !ok {
			return fmt.Errorf("fd %d: file %d was not opened", f.Fd, f.FileId)
		}
		got, err := r.call(p, fmt.Sprintf("install fd %d", f.Fd), linux.SysPidfdGetfd, high, uint64(ours), 0)
		if err != nil {
			return err
		}
		if got != uint64(f.Fd) {
			flags := uint64(0)
			if f.Cloexec {
				flags = linux.OCloexec
			}
			if _, err := r.call(p, fmt.Sprintf("install fd %d", f.Fd), linux.SysDup3, got, uint64(f.Fd), flags); err != nil {
				return err
			}
			if _, err := r.call(p, "close", linux.SysClose, got); err != nil {
				return err
			}
		} else if !f.Cloexec {
			if _, err := r.call(p, fmt.Sprintf("clear close-on-exec of fd %d", f.Fd), linux.SysFcntl, got, linux.FSetfd, 0); err != nil {
				return err
			}
		}
	}
	if err := r.armAsync(p); err != nil {
		return err
	}
	return r.fillEpolls(p)
}

// fillEpolls adds the watched fds to each epoll instance, from inside the first process that
// holds it and can: an epoll item is keyed by the fd number in the process that added it. A
// watched file held under another number (or by another process) is put at its number for
// the time of the watch.
func (r *restorer) fillEpolls(p *procRestore) error {
	have := map[int32]bool{}
	for _, f := range p.img.Fds {
		have[f.Fd] = true
	}
	for _, f := range p.img.Fds {
		of := r.fileByID(f.FileId)
		if of.Kind != imagepb.FileKind_FILE_KIND_EPOLL || r.epollDone[of.Id] {
			continue
		}
		// Another process holding the epoll fills it when this one cannot (the dump made
		// sure that one of them can).
		if _, usable := epollUsable(p.img.Fds, of); !usable {
			continue
		}
		if r.epollDone == nil {
			r.epollDone = map[uint32]bool{}
		}
		r.epollDone[of.Id] = true
		for _, it := range of.EpollItems {
			if !have[it.Tfd] {
				if err := r.installAt(p, it.FileId, it.Tfd); err != nil {
					return fmt.Errorf("epoll fd %d: watch fd %d: %w", f.Fd, it.Tfd, err)
				}
			}
			// struct epoll_event is packed on x86_64: u32 events, u64 data.
			ev := make([]byte, 12)
			binary.LittleEndian.PutUint32(ev, it.Events)
			binary.LittleEndian.PutUint64(ev[4:], it.Data)
			a, err := p.arg(scratchArg, ev)
			if err != nil {
				return err
			}
			if _, err := r.call(p, fmt.Sprintf("epoll fd %d: watch fd %d", f.Fd, it.Tfd), linux.SysEpollCtl, uint64(f.Fd), linux.EpollCtlAdd, uint64(it.Tfd), a); err != nil {
				return err
			}
			if !have[it.Tfd] {
				// The item stays: it goes with the file, not with the number.
				if _, err := r.call(p, fmt.Sprintf("close fd %d", it.Tfd), linux.SysClose, uint64(it.Tfd)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// installAt puts the restore's file id at fd number n of the process (a free number).
func (r *restorer) installAt(p *procRestore, id uint32, n int32) error {
	ours, ok := r.files[id]
	if !ok {
		return fmt.Errorf("file %d was not opened", id)
	}
	got, err := r.installTemp(p, ours)
	if err != nil {
		return err
	}
	if got != uint64(n) {
		if _, err := r.call(p, fmt.Sprintf("move fd %d to %d", got, n), linux.SysDup3, got, uint64(n), linux.OCloexec); err != nil {
			return err
		}
		if _, err := r.call(p, "close", linux.SysClose, got); err != nil {
			return err
		}
	}
	return nil
}

func (r *restorer) fileByID(id uint32) *imagepb.OpenFile {
	for _, f := range r.c.Tree.Files {
		if f.Id == id {
			return f
		}
	}
	return nil
}
