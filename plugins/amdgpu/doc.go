// Package amdgpu is gocr's plugin for AMD GPU jobs: processes that hold /dev/kfd and render
// nodes (/dev/dri/renderD*) with GPU memory, queues and events. At dump it pauses each
// process's queues and takes its KFD state with the kernel's CRIU ioctl (from gocr's tracer
// thread, as the kernel requires), saving the BOs' contents into the image; at restore it
// opens the devices inside each restored process, runs RESTORE there on GPUs matched by their
// properties (ids may differ), writes the contents back, maps the device mappings again at
// their new offsets and resumes every process once all are in place.
//
// internal/kfd is the kernel ABI; internal/kfdemu a FUSE emulator of /dev/kfd for tests.
package amdgpu
