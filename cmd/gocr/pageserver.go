package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/gocr/gocr/core"
)

type pageServerOptions struct {
	*globalOptions
	address   string
	port      int
	dir       string
	tokenFile string
}

func newCmdPageServer(g *globalOptions) *cobra.Command {
	opts := &pageServerOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "page-server --port N -D DIR --auth-token-file FILE",
		Short: "Receive an image a dump sends from another machine, or serve one to a lazy restore",
		Long: `As CRIU's page-server, on the receiving machine: wait for one dump sent with
'gocr dump --page-server HOST:PORT' and write its image (memory and metadata) into DIR,
checked whole (every file's size and checksum) before it appears there. Both ends must
hold the same secret token (a file of 16 bytes or more, given to both with
--auth-token-file): a peer that cannot prove it is refused, and the server waits on.
The link is authenticated, not encrypted: carry it over a network you trust, or a tunnel.
When DIR holds an image, the server serves it instead, to one
'gocr restore --lazy-pages --page-server HOST:PORT' on another machine: the metadata at
once, the pages as the restored processes need them.`,
		Example: `  head -c 32 /dev/urandom > token      # copy it to both machines
  gocr page-server --port 27000 -D /ckpt/job --auth-token-file token
  gocr dump -t 4121 --page-server dst:27000 --auth-token-file token   # on the source`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("port") || opts.port < 0 || opts.port > 65535 {
				return usageError{fmt.Errorf("page-server: give the port to listen on with --port N (0: any free one, printed)")}
			}
			if opts.dir == "" {
				return usageError{fmt.Errorf("page-server: where to? give an images directory with -D DIR")}
			}
			token, err := readToken(opts.tokenFile)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", net.JoinHostPort(opts.address, strconv.Itoa(opts.port)))
			if err != nil {
				return fmt.Errorf("page-server: %w", err)
			}
			fmt.Fprintf(opts.errOut, "gocr: page server listening on %s\n", ln.Addr())
			err = core.ServePages(cmd.Context(), core.PageServerOptions{Listener: ln, Dir: opts.dir, Token: token,
				Refused: func(addr string, err error) { fmt.Fprintf(opts.errOut, "gocr: refused %s: %v\n", addr, err) }})
			if err != nil {
				return err
			}
			fmt.Fprintf(opts.out, "page server done: %s\n", opts.dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.address, "address", "", "address to listen on (default: all)")
	f.IntVar(&opts.port, "port", 0, "TCP port to listen on (0: any free one, printed on standard error)")
	f.StringVarP(&opts.dir, "images-dir", "D", "", "directory to write the image to")
	f.StringVar(&opts.tokenFile, "auth-token-file", "", "file holding the secret both ends share (16 bytes or more)")
	return cmd
}

// readToken reads a page server token file.
func readToken(path string) ([]byte, error) {
	if path == "" {
		return nil, usageError{fmt.Errorf("a page server needs a shared secret: give --auth-token-file FILE (16 bytes or more) to both ends")}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth token: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) < 16 {
		return nil, usageError{fmt.Errorf("auth token %s: %d bytes, want 16 or more", path, len(b))}
	}
	return b, nil
}
