// Package aio is gocr's plugin for Linux AIO rings (io_setup): the ring a process shares with
// the kernel, mapped as "/[aio]". The core cannot map it again (only io_setup makes one); the
// plugin saves the ring at dump and, at restore, makes a ring of the same size inside the
// process, brings the kernel's tail to where it was with requests that complete at once,
// puts back the completions the process had not read and the head, and moves the ring to
// its old address, which is also the AIO context id the process holds.
//
// Requests still in flight at dump time are not kept (CRIU does not either): their
// completions are lost.
package aio
