package kfd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// layouts pairs each Go struct with its C struct in linux/kfd_ioctl.h.
var layouts = []struct {
	c   string
	go_ any
}{
	{"kfd_ioctl_get_version_args", GetVersionArgs{}},
	{"kfd_ioctl_create_queue_args", CreateQueueArgs{}},
	{"kfd_ioctl_destroy_queue_args", DestroyQueueArgs{}},
	{"kfd_ioctl_set_memory_policy_args", SetMemoryPolicyArgs{}},
	{"kfd_ioctl_create_event_args", CreateEventArgs{}},
	{"kfd_ioctl_destroy_event_args", DestroyEventArgs{}},
	{"kfd_process_device_apertures", ProcessDeviceApertures{}},
	{"kfd_ioctl_get_process_apertures_new_args", GetProcessAperturesNewArgs{}},
	{"kfd_ioctl_acquire_vm_args", AcquireVMArgs{}},
	{"kfd_ioctl_alloc_memory_of_gpu_args", AllocMemoryOfGPUArgs{}},
	{"kfd_ioctl_free_memory_of_gpu_args", FreeMemoryOfGPUArgs{}},
	{"kfd_ioctl_map_memory_to_gpu_args", MapMemoryToGPUArgs{}},
	{"kfd_ioctl_unmap_memory_from_gpu_args", MapMemoryToGPUArgs{}},
	{"kfd_ioctl_criu_args", CriuArgs{}},
	{"kfd_criu_device_bucket", DeviceBucket{}},
	{"kfd_criu_bo_bucket", BOBucket{}},
}

// cFields are the C field names of each struct, in order, where they differ from the Go
// ones only by case and underscores; "" skips a padding field of Go's.
func goLayout(v any) string {
	t := reflect.TypeOf(v)
	var b strings.Builder
	fmt.Fprintf(&b, "%d %d", t.Size(), t.Align())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		fmt.Fprintf(&b, " %d:%d", f.Offset, f.Type.Size())
	}
	return b.String()
}

// TestLayoutsMatchTheHeader compiles a C program against the system's linux/kfd_ioctl.h that
// prints size, alignment and every field's offset and size, and compares with the Go structs;
// it also checks the ioctl numbers against the header's macros.
func TestLayoutsMatchTheHeader(t *testing.T) {
	if _, err := os.Stat("/usr/include/linux/kfd_ioctl.h"); err != nil {
		t.Skip("linux/kfd_ioctl.h is not installed (Debian: linux-libc-dev): no C layout to compare with")
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc is not installed")
	}
	var src strings.Builder
	src.WriteString("#include <stdio.h>\n#include <stddef.h>\n#include <linux/kfd_ioctl.h>\n")
	src.WriteString("#define F(s, f) printf(\" %zu:%zu\", offsetof(struct s, f), sizeof(((struct s *)0)->f))\n")
	src.WriteString("int main(void) {\n")
	fields := map[string][]string{
		"kfd_ioctl_get_version_args":               {"major_version", "minor_version"},
		"kfd_ioctl_create_queue_args":              {"ring_base_address", "write_pointer_address", "read_pointer_address", "doorbell_offset", "ring_size", "gpu_id", "queue_type", "queue_percentage", "queue_priority", "queue_id", "eop_buffer_address", "eop_buffer_size", "ctx_save_restore_address", "ctx_save_restore_size", "ctl_stack_size"},
		"kfd_ioctl_destroy_queue_args":             {"queue_id", "pad"},
		"kfd_ioctl_set_memory_policy_args":         {"alternate_aperture_base", "alternate_aperture_size", "gpu_id", "default_policy", "alternate_policy", "pad"},
		"kfd_ioctl_create_event_args":              {"event_page_offset", "event_trigger_data", "event_type", "auto_reset", "node_id", "event_id", "event_slot_index"},
		"kfd_ioctl_destroy_event_args":             {"event_id", "pad"},
		"kfd_process_device_apertures":             {"lds_base", "lds_limit", "scratch_base", "scratch_limit", "gpuvm_base", "gpuvm_limit", "gpu_id", "pad"},
		"kfd_ioctl_get_process_apertures_new_args": {"kfd_process_device_apertures_ptr", "num_of_nodes", "pad"},
		"kfd_ioctl_acquire_vm_args":                {"drm_fd", "gpu_id"},
		"kfd_ioctl_alloc_memory_of_gpu_args":       {"va_addr", "size", "handle", "mmap_offset", "gpu_id", "flags"},
		"kfd_ioctl_free_memory_of_gpu_args":        {"handle"},
		"kfd_ioctl_map_memory_to_gpu_args":         {"handle", "device_ids_array_ptr", "n_devices", "n_success"},
		"kfd_ioctl_unmap_memory_from_gpu_args":     {"handle", "device_ids_array_ptr", "n_devices", "n_success"},
		"kfd_ioctl_criu_args":                      {"devices", "bos", "priv_data", "priv_data_size", "num_devices", "num_bos", "num_objects", "pid", "op"},
		"kfd_criu_device_bucket":                   {"user_gpu_id", "actual_gpu_id", "drm_fd", "pad"},
		"kfd_criu_bo_bucket":                       {"addr", "size", "offset", "restored_offset", "gpu_id", "alloc_flags", "dmabuf_fd", "pad"},
	}
	for _, l := range layouts {
		fmt.Fprintf(&src, "printf(\"%s %%zu %%zu\", sizeof(struct %s), _Alignof(struct %s));\n", l.c, l.c, l.c)
		for _, f := range fields[l.c] {
			fmt.Fprintf(&src, "F(%s, %s);\n", l.c, f)
		}
		src.WriteString("printf(\"\\n\");\n")
	}
	ioctls := map[string]uint32{
		"AMDKFD_IOC_GET_VERSION": IocGetVersion, "AMDKFD_IOC_CREATE_QUEUE": IocCreateQueue, "AMDKFD_IOC_DESTROY_QUEUE": IocDestroyQueue,
		"AMDKFD_IOC_SET_MEMORY_POLICY": IocSetMemoryPolicy, "AMDKFD_IOC_CREATE_EVENT": IocCreateEvent, "AMDKFD_IOC_DESTROY_EVENT": IocDestroyEvent,
		"AMDKFD_IOC_GET_PROCESS_APERTURES_NEW": IocGetProcessAperturesNew, "AMDKFD_IOC_ACQUIRE_VM": IocAcquireVM,
		"AMDKFD_IOC_ALLOC_MEMORY_OF_GPU": IocAllocMemoryOfGPU, "AMDKFD_IOC_FREE_MEMORY_OF_GPU": IocFreeMemoryOfGPU,
		"AMDKFD_IOC_MAP_MEMORY_TO_GPU": IocMapMemoryToGPU, "AMDKFD_IOC_UNMAP_MEMORY_FROM_GPU": IocUnmapMemoryFromGPU, "AMDKFD_IOC_CRIU_OP": IocCriuOp,
	}
	for name := range ioctls {
		fmt.Fprintf(&src, "printf(\"%s %%lu\\n\", (unsigned long)%s);\n", name, name)
	}
	fmt.Fprintf(&src, "printf(\"KFD_INVALID_FD %%u\\n\", KFD_INVALID_FD);\n")
	fmt.Fprintf(&src, "printf(\"FLAGS %%u %%u %%u %%u %%u\\n\", KFD_IOC_ALLOC_MEM_FLAGS_VRAM, KFD_IOC_ALLOC_MEM_FLAGS_GTT, KFD_IOC_ALLOC_MEM_FLAGS_USERPTR, KFD_IOC_ALLOC_MEM_FLAGS_DOORBELL, KFD_IOC_ALLOC_MEM_FLAGS_MMIO_REMAP);\n")
	fmt.Fprintf(&src, "printf(\"OPS %%d %%d %%d %%d %%d\\n\", KFD_CRIU_OP_PROCESS_INFO, KFD_CRIU_OP_CHECKPOINT, KFD_CRIU_OP_UNPAUSE, KFD_CRIU_OP_RESTORE, KFD_CRIU_OP_RESUME);\n")
	src.WriteString("return 0; }\n")
	dir := t.TempDir()
	c, bin := filepath.Join(dir, "layout.c"), filepath.Join(dir, "layout")
	if err := os.WriteFile(c, []byte(src.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	shim := filepath.Join("..", "..", "..", "..", "testdata", "workloads", "include")
	if out, err := exec.Command("gcc", "-I", shim, "-o", bin, c).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		name, rest, _ := strings.Cut(line, " ")
		got[name] = rest
	}
	for _, l := range layouts {
		want := goLayout(l.go_)
		// Go's blank tail padding field is not a C field.
		if l.c == "kfd_ioctl_criu_args" {
			want = want[:strings.LastIndex(want, " ")]
		}
		if got[l.c] != want {
			t.Errorf("struct %s: C has %q, Go %T has %q (size align offset:size...)", l.c, got[l.c], l.go_, want)
		}
	}
	for name, v := range ioctls {
		if got[name] != fmt.Sprint(v) {
			t.Errorf("%s: C %s, Go %d", name, got[name], v)
		}
	}
	if got["KFD_INVALID_FD"] != fmt.Sprint(uint32(InvalidFd)) {
		t.Errorf("KFD_INVALID_FD: C %s", got["KFD_INVALID_FD"])
	}
	if want := fmt.Sprint(AllocVRAM, AllocGTT, AllocUserptr, AllocDoorbell, AllocMMIORemap); got["FLAGS"] != want {
		t.Errorf("alloc flags: C %s, Go %s", got["FLAGS"], want)
	}
	if want := fmt.Sprint(OpProcessInfo, OpCheckpoint, OpUnpause, OpRestore, OpResume); got["OPS"] != want {
		t.Errorf("CRIU ops: C %s, Go %s", got["OPS"], want)
	}
	if IocCriuOp != 0xC0384B22 || IocGetVersion != 0x80084B01 {
		t.Errorf("CRIU_OP %#x, GET_VERSION %#x", IocCriuOp, IocGetVersion)
	}
}
