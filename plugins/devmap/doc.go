// Package devmap is gocr's plugin for mappings of devices (char and block device files)
// whose content belongs to the device: a framebuffer, a UIO region, a block device mapped
// shared. The core cannot map them again by itself (it maps only what it can fill); the
// plugin records the device and, at restore, opens it inside the process and maps it again
// at the same address, offset and protection. What the device holds is the device's: nothing
// of it goes into the image. A private writable mapping of a device is refused: the pages the
// process changed would be lost.
package devmap
