// Package linux is the one door to the kernel: the only package of the core that imports
// golang.org/x/sys/unix. Each wrapper is small, names what it wraps, retries EINTR where the
// call can see it and returns *os.SyscallError or *os.PathError. Policy lives one level up.
package linux
