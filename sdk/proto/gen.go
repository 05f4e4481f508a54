// Package proto holds the generated gRPC code of the plugin protocol (plugin.proto). Plugin
// authors in Go use package sdk instead; this package is for the host and for other languages.
package proto

//go:generate protoc --go_out=paths=source_relative:. --go-grpc_out=paths=source_relative:. plugin.proto
