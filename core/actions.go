package core

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
)

// Action scripts, as CRIU's --action-script: each script runs at each stage of a dump or a
// restore with CRTOOLS_SCRIPT_ACTION naming the stage, so that scripts written for CRIU work
// (they ignore the stages they do not know). Stages:
//
//	pre-dump     before the tree is frozen; a failure stops the dump, nothing touched
//	post-dump    the image is complete and synced, before the final state; a failure
//	             leaves the tree running (and the image in place)
//	pre-restore  before anything is made; a failure stops the restore
//	post-restore every process is in place, before any runs; a failure undoes the restore
//	pre-resume   right after post-restore, as CRIU has it; the same
//	post-resume  the tree runs; a failure is reported, the tree goes on
type actions struct {
	scripts []string
	out     io.Writer
	dir     string
	// notify, when set, is told each stage after the scripts, as the CRIU RPC's notify
	// callbacks are; an error from it counts as a failed script's.
	notify func(stage string, pid int) error
}

// run runs every script for one stage, in order, and stops at the first that fails.
func (a actions) run(ctx context.Context, stage string, rootPid int) error {
	for _, s := range a.scripts {
		cmd := exec.CommandContext(ctx, s)
		cmd.Env = append(os.Environ(), "CRTOOLS_SCRIPT_ACTION="+stage, "CRTOOLS_IMAGE_DIR="+a.dir)
		if rootPid > 0 {
			cmd.Env = append(cmd.Env, "CRTOOLS_INIT_PID="+strconv.Itoa(rootPid))
		}
		cmd.Stdout, cmd.Stderr = a.out, a.out
		if a.out == nil {
			cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		}
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("action script %s at %s: %w", s, stage, err)
		}
	}
	if a.notify != nil {
		if err := a.notify(stage, rootPid); err != nil {
			return fmt.Errorf("notify %s: %w", stage, err)
		}
	}
	return nil
}
