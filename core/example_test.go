package core_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/gocr/gocr/core"
)

// A program checkpoints a running tree, leaving it running, and tells why a dump failed.
func ExampleDump() {
	stats, err := core.Dump(context.Background(), core.DumpOptions{
		Roots: []int{4121},
		Dir:   "/var/lib/ckpt/job1",
		Final: core.LeaveRunning,
	})
	var ue *core.UnsupportedError
	switch {
	case errors.As(err, &ue):
		log.Fatalf("pid %d holds %s, which gocr cannot checkpoint: %v", ue.Pid, ue.Kind, err)
	case err != nil:
		log.Fatal(err) // the tree goes on running as it was; no image is left
	}
	fmt.Printf("%d processes, %d bytes of memory\n", stats.Processes, stats.Bytes)
}

// A program checks that an image would restore here, restores it and waits for its root.
// The restored roots are children of the calling process, which must reap them.
func ExampleRestore() {
	if rep, err := core.Check("/var/lib/ckpt/job1"); errors.Is(err, core.ErrCheckFailed) {
		for _, p := range rep.Problems {
			fmt.Println(p.What, p.Detail)
		}
		return
	}
	res, err := core.Restore(context.Background(), core.RestoreOptions{Dir: "/var/lib/ckpt/job1"})
	if errors.Is(err, core.ErrPidInUse) {
		log.Fatal(err) // the message names the process holding the PID; nothing was created
	} else if err != nil {
		log.Fatal(err)
	}
	ws, err := res.Wait()
	fmt.Println(ws.ExitStatus(), err)
}
