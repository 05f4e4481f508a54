package core

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/gocr/gocr/core/internal/pagesrv"
)

// PageServerOptions are the options of ServePages.
type PageServerOptions struct {
	// Listener is where clients connect (gocr page-server --address --port).
	Listener net.Listener
	// Dir receives the image; it must not hold one.
	Dir string
	// Token is the secret both sides hold: a client without it is refused.
	Token []byte
	// Refused, if set, is told of each client refused (wrong token or protocol).
	Refused func(addr string, err error)
}

// ServePages is the receiving end of a dump to another machine (CRIU's page-server): it
// waits for a dump pushed with DumpOptions.PageServer and the same token, writes its image
// into Dir, checks it whole and returns. Clients that do not prove the token are refused
// and waited past; a client that proves it but sends a bad image ends it with an error, and
// nothing is left in Dir. The listener is closed when it returns.
func ServePages(ctx context.Context, opts PageServerOptions) error {
	defer opts.Listener.Close()
	if len(opts.Token) < 16 {
		return fmt.Errorf("page server: the token must be 16 bytes or more: %w", ErrBadArgs)
	}
	stop := context.AfterFunc(ctx, func() { opts.Listener.Close() })
	defer stop()
	for {
		c, err := opts.Listener.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("page server: %w", ErrInterrupted)
			}
			return fmt.Errorf("page server: %w", err)
		}
		err = pagesrv.Serve(c, opts.Token, opts.Dir)
		if errors.Is(err, pagesrv.ErrAuth) {
			if opts.Refused != nil {
				opts.Refused(c.RemoteAddr().String(), err)
			}
			continue
		}
		return err
	}
}
