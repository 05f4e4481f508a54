// Package sdk is what a gocr plugin imports, and nothing else: Go interfaces for the hooks,
// plain Go types, and Serve, which runs the plugin as a hashicorp/go-plugin gRPC server. A
// plugin is an executable named gocr-plugin-NAME; gocr starts one process of it for a whole
// dump or restore. docs/plugins.md is the guide, with the ordering contract.
package sdk
