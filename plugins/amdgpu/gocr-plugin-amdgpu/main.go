// Command gocr-plugin-amdgpu is gocr's AMD GPU plugin: `gocr --plugin amdgpu dump ...`.
// See plugins/amdgpu/README.md.
package main

import (
	"github.com/gocr/gocr/plugins/amdgpu"
	"github.com/gocr/gocr/sdk"
)

func main() { sdk.Serve(amdgpu.New()) }
