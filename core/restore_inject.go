package core

import (
	"encoding/binary"
	"fmt"
	"unsafe"
)

// atFdcwd is AT_FDCWD (-100) as a syscall argument.
const atFdcwd = ^uint64(99)

var unsafeSizeofCloneArgs = unsafe.Sizeof(cloneArgs{})

// structBytes views a fixed-layout struct as bytes.
func structBytes[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

func le32bytes(v uint32) []byte {
	b := make([]byte, 4)
	binary.LittleEndian.PutUint32(b, v)
	return b
}

func le64bytes(v ...uint64) []byte {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], x)
	}
	return b
}

func cstring(s string) []byte { return append([]byte(s), 0) }

// call runs one injected syscall and counts it.
func (r *restorer) call(p *procRestore, what string, nr int, args ...uint64) (uint64, error) {
	r.stats.Syscalls++
	v, err := p.t.Syscall(nr, args...)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	return v, nil
}

// arg writes b into the scratch area at off and returns its address in the process.
func (p *procRestore) arg(off uint64, b []byte) (uint64, error) {
	if uint64(len(b)) > scratchArgSz {
		return 0, fmt.Errorf("argument of %d bytes does not fit the scratch area", len(b))
	}
	return p.scratch + off, p.t.WriteMem(p.scratch+off, b)
}
