package kfdemu

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"
)

// A process that still holds an emulated file when the emulator closes (a test that failed
// half-way) must not hang Close: the FUSE connection is aborted after a grace time.
func TestCloseWhileFileHeld(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the KFD emulator mounts FUSE: needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse here: the KFD emulator needs FUSE")
	}
	if st, err := os.Stat("/dev/kfd"); err == nil && st.Mode()&os.ModeDevice != 0 {
		t.Skip("this machine has a real /dev/kfd: the emulator does not cover it")
	}
	// Opened through the bind over /dev/kfd, as jobs do: the FUSE mount itself is then not
	// busy, and unmounting it leaves the connection alive while the file is held.
	e, err := Start(Config{GPUs: []GPU{DefaultGPU(0x1000, 128)}, BindHost: true})
	if err != nil {
		t.Fatal(err)
	}
	holder := exec.Command("sh", "-c", "exec sleep 60 </dev/kfd")
	if err := holder.Start(); err != nil {
		e.Close()
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/0", holder.Process.Pid))
		if link == "/dev/kfd" {
			break
		}
		if time.Now().After(deadline) {
			e.Close()
			t.Fatal("the holder never opened /dev/kfd")
		}
		time.Sleep(5 * time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- e.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(unmountGrace + 10*time.Second):
		t.Fatal("Close hangs while a process holds /dev/kfd of the emulator")
	}
}
