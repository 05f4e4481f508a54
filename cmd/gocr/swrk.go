package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/spf13/cobra"

	"github.com/gocr/gocr/core"
)

// CRIU's RPC protocol (images/rpc.proto, through go-criu's rpc package): a client makes a
// SOCK_SEQPACKET socketpair, runs `criu swrk FD` with one end, and sends one criu_req per
// datagram, answered by one criu_resp (several, with notify callbacks in between). runc,
// podman, containerd and Go programs on go-criu drive CRIU this way.

// swrkVersion is the CRIU version gocr answers VERSION with: clients enable features by it.
var swrkVersion = &rpc.CriuVersion{MajorNumber: ptr(int32(4)), MinorNumber: ptr(int32(1)), Name: ptr("gocr")}

func ptr[T any](v T) *T { return &v }

func newCmdSwrk(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "swrk FD",
		Short: "Serve CRIU's RPC protocol on a socket (as criu swrk)",
		Long: `Serve CRIU's RPC protocol (criu_req / criu_resp over the SOCK_SEQPACKET socket FD),
as 'criu swrk FD' does: runc, podman and go-criu start it with one end of a socketpair.
See docs/criu.md for the requests and options gocr takes.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("swrk: give one fd number, the socket")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			fd, err := strconv.Atoi(args[0])
			if err != nil || fd < 0 {
				return usageError{fmt.Errorf("swrk: %q is not an fd number", args[0])}
			}
			return serveSwrk(cmd.Context(), fd)
		},
	}
}

// serveSwrk answers requests until the client closes its end.
func serveSwrk(ctx context.Context, fd int) error {
	peer, err := syscall.GetsockoptUcred(fd, syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	if err != nil {
		return fmt.Errorf("swrk: fd %d is not a unix socket: %w", fd, err)
	}
	s := &swrk{fd: fd, peer: int(peer.Pid)}
	buf := make([]byte, 1<<20)
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("swrk: read request: %w", err)
		}
		if n == 0 {
			return nil // the client closed its end
		}
		req := &rpc.CriuReq{}
		if err := req.UnmarshalVT(buf[:n]); err != nil {
			// A message that is no criu_req: say so, and wait for the next.
			if err := s.send(&rpc.CriuResp{Type: rpc.CriuReqType_EMPTY.Enum(), Success: ptr(false), CrErrmsg: ptr("bad request: " + err.Error())}); err != nil {
				return err
			}
			continue
		}
		resp := s.handle(ctx, req)
		if resp == nil {
			return nil // the client went away during a notify
		}
		if err := s.send(resp); err != nil {
			return err
		}
	}
}

type swrk struct {
	fd   int
	peer int // the client's pid: images_dir_fd and work_dir_fd are its fds
}

func (s *swrk) send(resp *rpc.CriuResp) error {
	b, err := resp.MarshalVT()
	if err != nil {
		return err
	}
	if err := syscall.Sendto(s.fd, b, 0, nil); err != nil {
		return fmt.Errorf("swrk: send response: %w", err)
	}
	return nil
}

// fail is a criu_resp for a failed request: CRIU's errno where the error has one.
func fail(typ rpc.CriuReqType, err error) *rpc.CriuResp {
	resp := &rpc.CriuResp{Type: typ.Enum(), Success: ptr(false), CrErrmsg: ptr(err.Error())}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		resp.CrErrno = ptr(int32(errno))
	}
	return resp
}

func (s *swrk) handle(ctx context.Context, req *rpc.CriuReq) *rpc.CriuResp {
	typ := req.GetType()
	ok := &rpc.CriuResp{Type: typ.Enum(), Success: ptr(true)}
	switch typ {
	case rpc.CriuReqType_VERSION:
		ok.Version = swrkVersion
		return ok
	case rpc.CriuReqType_CHECK:
		if missing := missingFeatures(); missing != "" {
			return fail(typ, fmt.Errorf("kernel features gocr needs are missing: %s", missing))
		}
		return ok
	case rpc.CriuReqType_FEATURE_CHECK:
		// Say truly what gocr does: memory tracking (userfaultfd write-protect), no lazy
		// pages and no pidfd store yet.
		f := req.GetFeatures()
		out := &rpc.CriuFeatures{}
		if f.MemTrack != nil {
			out.MemTrack = ptr(featurePresent("userfaultfd write-protect"))
		}
		if f.LazyPages != nil {
			out.LazyPages = ptr(false)
		}
		if f.PidfdStore != nil {
			out.PidfdStore = ptr(false)
		}
		ok.Features = out
		return ok
	case rpc.CriuReqType_DUMP, rpc.CriuReqType_PRE_DUMP:
		return s.dump(ctx, req, ok)
	case rpc.CriuReqType_RESTORE:
		return s.restore(ctx, req, ok)
	}
	return fail(typ, fmt.Errorf("request %s is not handled by gocr", typ))
}

// The criu_opts fields gocr takes, by request; any other one set is refused by name.
var (
	dumpOpts = []string{"images_dir_fd", "images_dir", "pid", "leave_running", "leave_stopped", "tcp_established", "shell_job",
		"file_locks", "log_level", "log_file", "work_dir_fd", "notify_scripts", "parent_img", "track_mem", "ghost_limit",
		"tcp_skip_in_flight", "link_remap", "manage_cgroups", "manage_cgroups_mode", "log_to_stderr", "display_stats", "pre_dump_mode", "network_lock"}
	restoreOpts = []string{"images_dir_fd", "images_dir", "inherit_fd", "leave_stopped", "tcp_established", "shell_job", "file_locks", "log_level",
		"log_file", "work_dir_fd", "notify_scripts", "manage_cgroups", "manage_cgroups_mode", "log_to_stderr", "display_stats"}
)

// unhandledOpts names the fields set in opts that are not in handled.
func unhandledOpts(opts *rpc.CriuOpts, handled []string) []string {
	var out []string
	v, t := reflect.ValueOf(opts).Elem(), reflect.TypeOf(opts).Elem()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("protobuf")
		if tag == "" || v.Field(i).IsZero() {
			continue
		}
		name := ""
		for _, part := range strings.Split(tag, ",") {
			if n, ok := strings.CutPrefix(part, "name="); ok {
				name = n
			}
		}
		if name != "" && !contains(handled, name) {
			out = append(out, name)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// dirOf is the path of the client's images_dir_fd (or images_dir).
func (s *swrk) dirOf(opts *rpc.CriuOpts) (string, error) {
	if fd := opts.GetImagesDirFd(); fd >= 0 {
		dir, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", s.peer, fd))
		if err != nil {
			return "", fmt.Errorf("images_dir_fd %d of pid %d: %w", fd, s.peer, err)
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return "", fmt.Errorf("images_dir_fd %d of pid %d is not a directory (%s)", fd, s.peer, dir)
		}
		return dir, nil
	}
	if d := opts.GetImagesDir(); d != "" {
		return d, nil
	}
	return "", fmt.Errorf("no images_dir_fd nor images_dir")
}

// logTo appends what happened to the log file the client asked for (in work_dir_fd, or the
// images directory), which clients such as runc show their users when a request fails.
func (s *swrk) logTo(opts *rpc.CriuOpts, dir, format string, args ...any) {
	name := opts.GetLogFile()
	if name == "" || strings.Contains(name, "/") {
		return
	}
	if fd := opts.GetWorkDirFd(); opts.WorkDirFd != nil && fd >= 0 {
		if d, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", s.peer, fd)); err == nil {
			dir = d
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "(%s) gocr: "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// notifier passes the stages of a dump or restore to the client as CRIU's notify callbacks
// (pre-dump, post-dump, pre-restore, post-restore, post-resume), each answered before the
// operation goes on; a client's refusal stops it.
func (s *swrk) notifier(typ rpc.CriuReqType, on bool) func(stage string, pid int) error {
	if !on {
		return nil
	}
	return func(stage string, pid int) error {
		n := &rpc.CriuResp{Type: rpc.CriuReqType_NOTIFY.Enum(), Success: ptr(true), Notify: &rpc.CriuNotify{Script: ptr(stage), Pid: ptr(int32(pid))}}
		if err := s.send(n); err != nil {
			return err
		}
		buf := make([]byte, 64<<10)
		for {
			k, _, err := syscall.Recvfrom(s.fd, buf, 0)
			if err == syscall.EINTR {
				continue
			}
			if err != nil || k == 0 {
				return fmt.Errorf("the client went away at %s", stage)
			}
			ack := &rpc.CriuReq{}
			if err := ack.UnmarshalVT(buf[:k]); err != nil || ack.GetType() != rpc.CriuReqType_NOTIFY {
				return fmt.Errorf("the client answered %s with something else than a notify", stage)
			}
			if !ack.GetNotifySuccess() {
				return fmt.Errorf("the client refused %s", stage)
			}
			return nil
		}
	}
}

func (s *swrk) dump(ctx context.Context, req *rpc.CriuReq, ok *rpc.CriuResp) *rpc.CriuResp {
	typ, opts := req.GetType(), req.GetOpts()
	if opts == nil {
		return fail(typ, fmt.Errorf("no criu_opts"))
	}
	if bad := unhandledOpts(opts, dumpOpts); len(bad) > 0 {
		return fail(typ, fmt.Errorf("criu_opts %s: not handled by gocr", strings.Join(bad, ", ")))
	}
	dir, err := s.dirOf(opts)
	if err != nil {
		return fail(typ, err)
	}
	pid := int(opts.GetPid())
	if pid == 0 {
		pid = s.peer // CRIU dumps the client itself then
	}
	// The client holds the directory open (images_dir_fd) and reads it through that fd: the
	// image goes into it (IntoDir), so the directory stays the same.
	d := core.DumpOptions{Roots: []int{pid}, Dir: dir, IntoDir: true, TCPEstablished: opts.GetTcpEstablished(), ShellJob: opts.GetShellJob(),
		TrackMem: opts.GetTrackMem(), SkipInFlight: opts.GetTcpSkipInFlight(), LinkRemap: opts.GetLinkRemap(), Notify: s.notifier(typ, opts.GetNotifyScripts())}
	switch {
	case typ == rpc.CriuReqType_PRE_DUMP:
		d.PreDump = true
	case opts.GetLeaveStopped():
		d.Final = core.LeaveStopped
	case opts.GetLeaveRunning():
		d.Final = core.LeaveRunning
	}
	if opts.GhostLimit != nil {
		d.GhostLimit = int64(opts.GetGhostLimit())
	}
	if p := opts.GetParentImg(); p != "" {
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p) // relative to the images directory, as CRIU has it
		}
		d.Parent = p
	}
	if _, err := core.Dump(ctx, d); err != nil {
		s.logTo(opts, dir, "%s of pid %d failed: %v", strings.ToLower(typ.String()), pid, err)
		return fail(typ, err)
	}
	s.logTo(opts, dir, "%s of pid %d: done", strings.ToLower(typ.String()), pid)
	ok.Dump = &rpc.CriuDumpResp{}
	return ok
}

func (s *swrk) restore(ctx context.Context, req *rpc.CriuReq, ok *rpc.CriuResp) *rpc.CriuResp {
	typ, opts := req.GetType(), req.GetOpts()
	if opts == nil {
		return fail(typ, fmt.Errorf("no criu_opts"))
	}
	if bad := unhandledOpts(opts, restoreOpts); len(bad) > 0 {
		return fail(typ, fmt.Errorf("criu_opts %s: not handled by gocr", strings.Join(bad, ", ")))
	}
	dir, err := s.dirOf(opts)
	if err != nil {
		return fail(typ, err)
	}
	r := core.RestoreOptions{Dir: dir, LeaveStopped: opts.GetLeaveStopped(), Notify: s.notifier(typ, opts.GetNotifyScripts())}
	if opts.GetShellJob() {
		// The job gets the terminal the client gave swrk, as CRIU's own stdin.
		tty, err := os.Readlink("/proc/self/fd/0")
		if err != nil {
			return fail(typ, fmt.Errorf("shell_job: swrk's stdin is no terminal: %w", err))
		}
		r.ShellJob, r.TTY = true, tty
	}
	for _, in := range opts.GetInheritFd() {
		// The fd is swrk's own (the client passed it at the start, as to criu swrk): it takes
		// the place of the file the key names (pipe:[INODE], as the dump saw it).
		if r.InheritFds == nil {
			r.InheritFds = map[string]int{}
		}
		r.InheritFds[in.GetKey()] = int(in.GetFd())
	}
	if opts.GetManageCgroupsMode() == rpc.CriuCgMode_IGNORE {
		r.NoCgroups = true
	}
	res, err := core.Restore(ctx, r)
	if err != nil {
		s.logTo(opts, dir, "restore failed: %v", err)
		return fail(typ, err)
	}
	s.logTo(opts, dir, "restore: root %d", res.Roots[0])
	ok.Restore = &rpc.CriuRestoreResp{Pid: ptr(int32(res.Roots[0]))}
	return ok
}

// missingFeatures names the required kernel features that are missing ("" for none).
func missingFeatures() string {
	var out []string
	for _, f := range core.Features() {
		if f.Required && !f.Present {
			out = append(out, f.Name)
		}
	}
	return strings.Join(out, ", ")
}

// featurePresent says whether the kernel feature whose name starts with name is here.
func featurePresent(name string) bool {
	for _, f := range core.Features() {
		if strings.HasPrefix(f.Name, name) {
			return f.Present
		}
	}
	return false
}
