package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/gocr/gocr/service"
)

func newCmdService(g *globalOptions) *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "service --socket PATH",
		Short: "Serve gocr's gRPC API on a unix socket",
		Long: `Serve gocr's own gRPC service (service/servicepb/service.proto) on the unix socket PATH
(made 0600): Dump, PreDump, Restore (progress streamed while they run) and Check, with
errors that say which process and which resource. Go programs use the client in package
github.com/gocr/gocr/service. Ctrl-C or SIGTERM stops it. Restored processes are the
service's children, reaped by it.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if socket == "" {
				return usageError{errSocketNeeded}
			}
			return service.Serve(cmd.Context(), socket)
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "unix socket to listen on")
	return cmd
}

var errSocketNeeded = errors.New("service: --socket PATH is needed")
