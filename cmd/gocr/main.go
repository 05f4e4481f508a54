// Command gocr checkpoints and restores trees of Linux processes.
package main

import "os"

func main() { os.Exit(Main()) }
