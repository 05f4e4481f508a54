// Package service is gocr's own gRPC service (gocr service --socket PATH) and its Go client:
// dumps, pre-dumps, restores and checks, with progress streamed while they run and errors
// that say which process and which resource, for programs that drive gocr.
package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gocr/gocr/core"
	"github.com/gocr/gocr/core/image"
	"github.com/gocr/gocr/service/servicepb"
)

// errorDomain is the domain of the service's google.rpc.ErrorInfo details.
const errorDomain = "gocr"

// Serve answers requests on a unix socket at path (made 0600; one already there is
// replaced) until ctx ends.
func Serve(ctx context.Context, path string) error {
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("service: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("service: %w", err)
	}
	srv := grpc.NewServer()
	servicepb.RegisterGocrServer(srv, &server{})
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	err = srv.Serve(l)
	os.Remove(path)
	if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("service: %w", err)
	}
	return nil
}

type server struct {
	servicepb.UnimplementedGocrServer
}

func (s *server) Dump(req *servicepb.DumpRequest, stream servicepb.Gocr_DumpServer) error {
	return s.dump(req, stream, false)
}

func (s *server) PreDump(req *servicepb.DumpRequest, stream servicepb.Gocr_PreDumpServer) error {
	return s.dump(req, stream, true)
}

func (s *server) dump(req *servicepb.DumpRequest, stream grpc.ServerStreamingServer[servicepb.Event], pre bool) error {
	progress, done := progressTo(stream)
	opts := core.DumpOptions{Dir: req.Dir, TCPEstablished: req.TcpEstablished, ShellJob: req.ShellJob, TrackMem: req.TrackMem,
		Parent: req.Parent, Overwrite: req.Overwrite, IntoDir: req.IntoDir, PreDump: pre, Tracked: req.Tracked, Compress: req.Compress, Progress: progress}
	for _, p := range req.Pids {
		opts.Roots = append(opts.Roots, int(p))
	}
	switch {
	case req.LeaveStopped:
		opts.Final = core.LeaveStopped
	case req.LeaveRunning:
		opts.Final = core.LeaveRunning
	}
	st, err := core.Dump(stream.Context(), opts)
	done()
	if err != nil {
		return toStatus(err)
	}
	return stream.Send(&servicepb.Event{Event: &servicepb.Event_Result{Result: &servicepb.Result{
		Bytes: st.Bytes, Seconds: st.Total.Seconds(), Warnings: st.Warnings}}})
}

func (s *server) Restore(req *servicepb.RestoreRequest, stream servicepb.Gocr_RestoreServer) error {
	// The restored roots are the service's children: reaped when they end, whoever asked.
	progress, done := progressTo(stream)
	res, err := core.Restore(context.WithoutCancel(stream.Context()), core.RestoreOptions{Dir: req.Dir, LeaveStopped: req.LeaveStopped,
		NewPidns: req.NewPidns, LazyPages: req.LazyPages, Progress: progress})
	done()
	if err != nil {
		return toStatus(err)
	}
	go res.Wait()
	r := &servicepb.Result{Bytes: res.Stats.Bytes, Seconds: res.Stats.Total.Seconds(), Warnings: res.Warnings}
	for _, p := range res.Roots {
		r.Roots = append(r.Roots, int32(p))
	}
	for _, p := range res.Pids {
		r.Pids = append(r.Pids, int32(p))
	}
	return stream.Send(&servicepb.Event{Event: &servicepb.Event_Result{Result: r}})
}

func (s *server) Track(ctx context.Context, req *servicepb.TrackRequest) (*servicepb.TrackReply, error) {
	opts := core.TrackOptions{Reset: req.ResetTracking}
	for _, p := range req.Pids {
		opts.Roots = append(opts.Roots, int(p))
	}
	rep, err := core.Track(ctx, opts)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &servicepb.TrackReply{}
	for _, p := range rep.Processes {
		tp := &servicepb.TrackedProcess{Pid: int32(p.Pid), Tracked: p.Tracked, Pages: p.Pages}
		for _, m := range p.Mappings {
			for _, w := range m.Written {
				tp.Written = append(tp.Written, &servicepb.Range{Start: w[0], End: w[1]})
			}
		}
		out.Processes = append(out.Processes, tp)
	}
	return out, nil
}

func (s *server) Apply(ctx context.Context, req *servicepb.ApplyRequest) (*servicepb.Result, error) {
	st, err := core.Apply(ctx, core.ApplyOptions{Root: int(req.Pid), Dir: req.Dir})
	if err != nil {
		return nil, toStatus(err)
	}
	return &servicepb.Result{Bytes: st.Pages * 4096, Seconds: st.Frozen.Seconds()}, nil
}

func (s *server) Check(ctx context.Context, req *servicepb.CheckRequest) (*servicepb.CheckReply, error) {
	out := &servicepb.CheckReply{Ok: true}
	if req.Dir == "" {
		for _, f := range core.Features() {
			if f.Required && !f.Present {
				out.Ok, out.Problems = false, append(out.Problems, f.Name+": "+f.Cost)
			}
		}
		return out, nil
	}
	rep, err := core.Check(req.Dir)
	var failed *core.CheckFailedError
	if errors.As(err, &failed) {
		rep, err = failed.Report, nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	for _, p := range rep.Problems {
		out.Ok, out.Problems = false, append(out.Problems, p.String())
	}
	return out, nil
}

// progressTo sends core's progress reports on the stream (dropped when the client is slow:
// the next one says as much). done ends it, once the operation returned, before the result
// is sent (a stream takes one sender at a time).
func progressTo(stream grpc.ServerStreamingServer[servicepb.Event]) (report func(core.Progress), done func()) {
	events := make(chan *servicepb.Event, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for ev := range events {
			stream.Send(ev)
		}
	}()
	var mu sync.Mutex
	closed := false
	report = func(p core.Progress) {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			return
		}
		select {
		case events <- &servicepb.Event{Event: &servicepb.Event_Progress{Progress: &servicepb.Progress{Stage: p.Stage, Done: p.Done, Total: p.Total}}}:
		default:
		}
	}
	done = func() {
		mu.Lock()
		closed = true
		close(events)
		mu.Unlock()
		<-finished
	}
	return report, done
}

// Error reasons, in ErrorInfo.reason.
const (
	ReasonNoProcess    = "NO_PROCESS"
	ReasonPermission   = "PERMISSION"
	ReasonUnsupported  = "UNSUPPORTED"
	ReasonIncompatible = "INCOMPATIBLE"
	ReasonImage        = "IMAGE"
	ReasonBadArgs      = "BAD_ARGUMENTS"
	ReasonInterrupted  = "INTERRUPTED"
	ReasonFailed       = "FAILED"
)

// toStatus turns a core error into a gRPC status with an ErrorInfo naming its kind, the
// process and the resource.
func toStatus(err error) error {
	code, reason := codes.Unknown, ReasonFailed
	switch {
	case errors.Is(err, core.ErrInterrupted):
		code, reason = codes.Aborted, ReasonInterrupted
	case errors.Is(err, core.ErrNoProcess):
		code, reason = codes.NotFound, ReasonNoProcess
	case errors.Is(err, core.ErrPermission), errors.Is(err, core.ErrTraced):
		code, reason = codes.PermissionDenied, ReasonPermission
	case errors.Is(err, core.ErrUnsupported):
		code, reason = codes.FailedPrecondition, ReasonUnsupported
	case errors.Is(err, core.ErrIncompatible), errors.Is(err, core.ErrPidInUse), errors.Is(err, core.ErrLockHeld):
		code, reason = codes.FailedPrecondition, ReasonIncompatible
	case errors.Is(err, image.ErrCorrupt), errors.Is(err, image.ErrVersion), errors.Is(err, image.ErrNoImage), errors.Is(err, image.ErrExists):
		code, reason = codes.InvalidArgument, ReasonImage
	case errors.Is(err, core.ErrBadArgs):
		code, reason = codes.InvalidArgument, ReasonBadArgs
	}
	info := &errdetails.ErrorInfo{Reason: reason, Domain: errorDomain, Metadata: map[string]string{}}
	var ue *core.UnsupportedError
	if errors.As(err, &ue) {
		info.Metadata["pid"] = strconv.Itoa(ue.Pid)
		info.Metadata["what"] = ue.What
		info.Metadata["kind"] = ue.Kind
		if ue.Hint != "" {
			info.Metadata["hint"] = ue.Hint
		}
	}
	st, derr := status.New(code, err.Error()).WithDetails(info)
	if derr != nil {
		return status.Error(code, err.Error())
	}
	return st.Err()
}
