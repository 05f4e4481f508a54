// Command gocr-plugin-devmap is gocr's plugin for mappings of devices: see package
// github.com/gocr/gocr/plugins/devmap. Use it as gocr --plugin devmap dump ...; a restore
// starts it by itself when the image needs it.
package main

import (
	"github.com/gocr/gocr/plugins/devmap"
	"github.com/gocr/gocr/sdk"
)

func main() { sdk.Serve(&devmap.Plugin{}) }
