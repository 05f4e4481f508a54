// Package tracer owns ptrace: an OS thread that every ptrace and wait4 call goes through, and
// the tracees attached from it, with syscall injection. It knows nothing of images.
package tracer

import (
	"fmt"
	"runtime"

	"github.com/gocr/gocr/core/internal/linux"
)

// Thread is one locked OS thread. ptrace ties a tracee to the thread that attached it, so
// every call for a tracee of this thread must run through Do.
type Thread struct {
	work   chan func()
	done   chan struct{}
	pinned *linux.CPUSet // the mask before Pin, put back by Close
}

// NewThread starts a locked OS thread. Close ends it; the kernel detaches whatever it still traces.
func NewThread() *Thread {
	t := &Thread{work: make(chan func()), done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		// Never unlocked: the thread exits with the goroutine, so no other goroutine
		// ever runs on a thread that is some process's tracer.
		runtime.LockOSThread()
		close(ready)
		for f := range t.work {
			f()
		}
		close(t.done)
	}()
	<-ready
	return t
}

// Do runs f on the thread and returns its error. A panic in f is returned as an error.
func (t *Thread) Do(f func() error) (err error) {
	ch := make(chan error, 1)
	t.work <- func() {
		defer func() {
			if r := recover(); r != nil {
				ch <- fmt.Errorf("tracer thread: panic: %v", r)
			}
		}()
		ch <- f()
	}
	return <-ch
}

// Pin keeps the thread, and the tracees pinned with Tracee.Pin, on one CPU: an injected
// syscall costs 16-20 µs when tracer and tracee share a CPU and 70-120 µs when they do not.
// It returns the CPU.
func (t *Thread) Pin() (int, error) {
	var cpu int
	err := t.Do(func() error {
		set, err := linux.GetAffinity(0)
		if err != nil {
			return err
		}
		cpu = linux.FirstCPU(set)
		if err := linux.SetAffinity(0, linux.OneCPU(cpu)); err != nil {
			return err
		}
		if t.pinned == nil {
			t.pinned = &set
		}
		return nil
	})
	return cpu, err
}

// Close stops the thread. Its CPU mask is put back first: the Go runtime may keep the
// thread (the main thread is never ended) and hand it to other goroutines.
func (t *Thread) Close() {
	if t.pinned != nil {
		t.Do(func() error { return linux.SetAffinity(0, *t.pinned) })
	}
	close(t.work)
	<-t.done
}
