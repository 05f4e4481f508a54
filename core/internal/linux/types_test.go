package linux

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The ABI structs must match their C layout exactly.
func TestABISizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"struct pm_scan_arg", unsafe.Sizeof(pmScanArg{}), 96},
		{"struct inet_diag_req_v2", unsafe.Sizeof(inetDiagReq{}), 56},
		{"struct f_owner_ex", unsafe.Sizeof(fOwnerEx{}), 8},
		{"struct kcmp_epoll_slot", unsafe.Sizeof(kcmpEpollSlot{}), 12},
		{"struct sock_filter", uintptr(sockFilterSize), 8},
		{"struct page_region", unsafe.Sizeof(PageRegion{}), 24},
		{"struct ptrace_rseq_configuration", unsafe.Sizeof(RseqConfig{}), 24},
		{"struct ptrace_peeksiginfo_args", unsafe.Sizeof(peekSigInfoArgs{}), 16},
		{"struct user_regs_struct", unsafe.Sizeof(Regs{}), 27 * 8},
		{"struct uffdio_api", unsafe.Sizeof(uffdioAPIArg{}), 24},
		{"struct uffdio_register", unsafe.Sizeof(uffdioRegisterArg{}), 32},
		{"struct flock (FlockBytes)", unsafe.Sizeof(unix.Flock_t{}), FlockSize},
		{"struct semid64_ds", unsafe.Sizeof(semidDs{}), 104},
		{"struct msqid64_ds", unsafe.Sizeof(msqidDs{}), 120},
		{"offsetof(struct semid64_ds, sem_nsems)", unsafe.Offsetof(semidDs{}.Nsems), 80},
		{"offsetof(struct msqid64_ds, msg_qbytes)", unsafe.Offsetof(msqidDs{}.Qbytes), 88},
	} {
		if c.got != c.want {
			t.Errorf("%s: size %d, want %d", c.name, c.got, c.want)
		}
	}
}

// The fields of struct ptrace_rseq_configuration sit where linux/ptrace.h puts them.
func TestRseqConfigLayout(t *testing.T) {
	var c RseqConfig
	if off := unsafe.Offsetof(c.Signature); off != 12 {
		t.Errorf("signature at %d, want 12", off)
	}
	if off := unsafe.Offsetof(c.Flags); off != 16 {
		t.Errorf("flags at %d, want 16", off)
	}
}

func TestUnixDiagReqSize(t *testing.T) {
	if s := unsafe.Sizeof(unixDiagReq{}); s != 24 {
		t.Errorf("struct unix_diag_req: %d bytes, want 24", s)
	}
}

// CPUID and XGETBV give a sane layout; core tests compare it with what ptrace gives a process.
func TestXStateLayoutMatchesPtrace(t *testing.T) {
	size, features := XStateLayout()
	if size < 512 || features&3 != 3 {
		t.Fatalf("XSTATE layout %d bytes, features %#x", size, features)
	}
	t.Logf("XSTATE %d bytes, features %#x", size, features)
}

// FlockBytes lays out struct flock as the kernel reads it (type, whence, start, len).
func TestFlockBytes(t *testing.T) {
	b := FlockBytes(true, 10, 19)
	lk := (*unix.Flock_t)(unsafe.Pointer(&b[0]))
	if lk.Type != unix.F_WRLCK || lk.Whence != 0 || lk.Start != 10 || lk.Len != 10 {
		t.Errorf("FlockBytes(write, 10, 19) = %+v", *lk)
	}
	b = FlockBytes(false, 100, -1)
	lk = (*unix.Flock_t)(unsafe.Pointer(&b[0]))
	if lk.Type != unix.F_RDLCK || lk.Start != 100 || lk.Len != 0 {
		t.Errorf("FlockBytes(read, 100, EOF) = %+v", *lk)
	}
}

// The signal frame structs as the x86_64 kernel lays them out.
func TestSigframeLayout(t *testing.T) {
	for _, c := range []struct {
		name       string
		size, want uintptr
	}{
		{"struct sigcontext", unsafe.Sizeof(Sigcontext{}), 256},
		{"stack_t", unsafe.Sizeof(StackT{}), 24},
		{"struct ucontext", unsafe.Sizeof(Ucontext{}), 304},
		{"struct rt_sigframe", unsafe.Sizeof(RtSigframe{}), 440},
	} {
		if c.size != c.want {
			t.Errorf("%s: %d bytes, want %d", c.name, c.size, c.want)
		}
	}
	if off := unsafe.Offsetof(Sigcontext{}.Fpstate); off != 184 {
		t.Errorf("sigcontext.fpstate at %d, want 184", off)
	}
	if off := unsafe.Offsetof(Ucontext{}.Sigmask); off != 296 {
		t.Errorf("ucontext.uc_sigmask at %d, want 296", off)
	}
}
