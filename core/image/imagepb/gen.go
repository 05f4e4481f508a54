// Package imagepb holds the protobuf messages of the gocr image format, generated from
// image.proto. Nothing else belongs here: reading, writing and checking images is package image.
package imagepb

//go:generate protoc --go_out=paths=source_relative:. image.proto
