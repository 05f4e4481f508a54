// Package servicepb holds the generated gRPC code of gocr's service (service.proto). Go
// programs use package service's Client instead.
package servicepb

//go:generate protoc --go_out=paths=source_relative:. --go-grpc_out=paths=source_relative:. service.proto
