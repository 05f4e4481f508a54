// Command gocr-kfdemu runs a command under an emulated AMD GPU: /dev/kfd and
// /dev/dri/renderD<minor> answered by a FUSE emulator of the KFD ioctls, and a fake topology
// (as /sys/class/kfd/kfd/topology) whose path is given to the command as $KFD_TOPOLOGY and
// $GOCR_AMDGPU_TOPOLOGY. The files are bound over the host's paths while the command runs and
// removed when it ends. Needs root and /dev/fuse; refuses to cover a real /dev/kfd.
//
//	gocr-kfdemu [--gpus N] [--gpu-ids 0x1111,0x2222] [--kfd-minor M] -- COMMAND [ARGS...]
//
// See plugins/amdgpu/README.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/gocr/gocr/plugins/amdgpu/internal/kfdemu"
)

func main() { os.Exit(run()) }

func run() int {
	fl := flag.NewFlagSet("gocr-kfdemu", flag.ContinueOnError)
	n := fl.Int("gpus", 2, "number of GPUs to emulate")
	ids := fl.String("gpu-ids", "", "their gpu ids, comma-separated (default 0x1001, 0x1002...)")
	minor := fl.Uint("kfd-minor", 11, "KFD ioctl API minor version to answer (1.MINOR)")
	verbose := fl.Bool("v", false, "print every ioctl answered when the command ends")
	fl.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: gocr-kfdemu [--gpus N] [--gpu-ids ID,ID] [--kfd-minor M] [-v] -- COMMAND [ARGS...]")
		fl.PrintDefaults()
	}
	if err := fl.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if fl.NArg() == 0 {
		fl.Usage()
		return 2
	}
	cfg := kfdemu.Config{MinorVersion: uint32(*minor), BindHost: true}
	var gpuIDs []uint32
	if *ids != "" {
		for _, s := range strings.Split(*ids, ",") {
			v, err := strconv.ParseUint(strings.TrimSpace(s), 0, 32)
			if err != nil {
				fmt.Fprintf(os.Stderr, "gocr-kfdemu: gpu id %q: %v\n", s, err)
				return 2
			}
			gpuIDs = append(gpuIDs, uint32(v))
		}
		*n = len(gpuIDs)
	}
	for i := 0; i < *n; i++ {
		id := uint32(0x1001 + i)
		if gpuIDs != nil {
			id = gpuIDs[i]
		}
		cfg.GPUs = append(cfg.GPUs, kfdemu.DefaultGPU(id, uint32(128+i)))
	}
	emu, err := kfdemu.Start(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gocr-kfdemu: %v\n", err)
		return 1
	}
	defer emu.Close()
	fmt.Fprintf(os.Stderr, "gocr-kfdemu: /dev/kfd (KFD 1.%d) and", cfg.MinorVersion)
	for _, g := range cfg.GPUs {
		fmt.Fprintf(os.Stderr, " /dev/dri/renderD%d (gpu %#x)", g.Minor, g.ID)
	}
	fmt.Fprintf(os.Stderr, "; topology in %s\n", emu.Topology())
	cmd := exec.Command(fl.Arg(0), fl.Args()[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "KFD_TOPOLOGY="+emu.Topology(), "GOCR_AMDGPU_TOPOLOGY="+emu.Topology())
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "gocr-kfdemu: %v\n", err)
		return 1
	}
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	if *verbose {
		for _, ev := range emu.Log() {
			fmt.Fprintln(os.Stderr, "gocr-kfdemu:", ev)
		}
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return exit.ExitCode()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "gocr-kfdemu: %v\n", err)
		return 1
	}
	return 0
}
