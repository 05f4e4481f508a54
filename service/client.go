package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/gocr/gocr/service/servicepb"
)

// Client talks to a gocr service.
type Client struct {
	conn *grpc.ClientConn
	api  servicepb.GocrClient
}

// Dial connects to the service listening on the unix socket at path.
func Dial(path string) (*Client, error) {
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, api: servicepb.NewGocrClient(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Error is a failure the service reported: its kind (Reason*), and for what gocr does not
// handle, the process and the resource.
type Error struct {
	Reason  string
	Message string
	Pid     int    // 0 when none
	What    string // "fd 5", "mapping ..."
	Kind    string // what it is
	Hint    string
}

func (e *Error) Error() string { return e.Message }

// fromStatus turns the service's gRPC status into an *Error.
func fromStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	out := &Error{Reason: ReasonFailed, Message: st.Message()}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Domain == errorDomain {
			out.Reason = info.Reason
			out.Pid, _ = strconv.Atoi(info.Metadata["pid"])
			out.What, out.Kind, out.Hint = info.Metadata["what"], info.Metadata["kind"], info.Metadata["hint"]
		}
	}
	return out
}

// Progress is a report of how far an operation is.
type Progress = servicepb.Progress

// Result is what a finished operation gives.
type Result = servicepb.Result

// Dump checkpoints, calling progress (if not nil) as the service reports it.
func (c *Client) Dump(ctx context.Context, req *servicepb.DumpRequest, progress func(*Progress)) (*Result, error) {
	s, err := c.api.Dump(ctx, req)
	return wait(s, err, progress)
}

// PreDump pre-dumps (see gocr pre-dump).
func (c *Client) PreDump(ctx context.Context, req *servicepb.DumpRequest, progress func(*Progress)) (*Result, error) {
	s, err := c.api.PreDump(ctx, req)
	return wait(s, err, progress)
}

// Restore restores; the result holds the pids the processes have.
func (c *Client) Restore(ctx context.Context, req *servicepb.RestoreRequest, progress func(*Progress)) (*Result, error) {
	s, err := c.api.Restore(ctx, req)
	return wait(s, err, progress)
}

// Check checks an image (or, with dir "", this machine's kernel) and lists the problems.
func (c *Client) Check(ctx context.Context, dir string) ([]string, error) {
	r, err := c.api.Check(ctx, &servicepb.CheckRequest{Dir: dir})
	if err != nil {
		return nil, fromStatus(err)
	}
	return r.Problems, nil
}

// Track reports what the trees of pids wrote since their memory tracking was reset and,
// with reset, resets it.
func (c *Client) Track(ctx context.Context, pids []int32, reset bool) ([]*servicepb.TrackedProcess, error) {
	r, err := c.api.Track(ctx, &servicepb.TrackRequest{Pids: pids, ResetTracking: reset})
	if err != nil {
		return nil, fromStatus(err)
	}
	return r.Processes, nil
}

// Apply writes the memory of the image in dir back into the live tree of pid.
func (c *Client) Apply(ctx context.Context, pid int32, dir string) (*Result, error) {
	r, err := c.api.Apply(ctx, &servicepb.ApplyRequest{Pid: pid, Dir: dir})
	if err != nil {
		return nil, fromStatus(err)
	}
	return r, nil
}

func wait(s grpc.ServerStreamingClient[servicepb.Event], err error, progress func(*Progress)) (*Result, error) {
	if err != nil {
		return nil, fromStatus(err)
	}
	for {
		ev, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("the service ended the call without a result")
		}
		if err != nil {
			return nil, fromStatus(err)
		}
		if p := ev.GetProgress(); p != nil && progress != nil {
			progress(p)
		}
		if r := ev.GetResult(); r != nil {
			return r, nil
		}
	}
}
