package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gocr/gocr/sdk"
)

// The example plugin, tested in-process with the SDK's harness: a file dumped at an offset
// comes back open at that offset, as a new open file description.
func TestExampleRoundTrip(t *testing.T) {
	dir := t.TempDir()
	h, err := sdk.NewHarness(&example{prefix: dir + "/", signal: make(chan struct{})})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	claims, err := h.Init("dump")
	if err != nil || len(claims.PathPrefixes) != 1 || claims.PathPrefixes[0] != dir+"/" {
		t.Fatalf("claims %+v, %v", claims, err)
	}
	path := filepath.Join(dir, "data")
	os.WriteFile(path, []byte("0123456789"), 0o644)
	blob, err := h.DumpFile(sdk.File{Pid: 1, Fd: 3, Path: path, Flags: uint32(os.O_RDWR), Pos: 4})
	if err != nil {
		t.Fatal(err)
	}
	f, err := h.RestoreFile(sdk.File{Pid: 1, Fd: 3, Path: path}, blob)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 3)
	if n, _ := f.Read(b); string(b[:n]) != "456" {
		t.Fatalf("restored file reads %q at its offset, want 456", b[:n])
	}
	h.Fini(true)
}
