// Command gocr-plugin-aio is gocr's plugin for Linux AIO rings: see package
// github.com/gocr/gocr/plugins/aio. Use it as gocr --plugin aio dump ...; a restore starts it
// by itself when the image needs it.
package main

import (
	"github.com/gocr/gocr/plugins/aio"
	"github.com/gocr/gocr/sdk"
)

func main() { sdk.Serve(&aio.Plugin{}) }
