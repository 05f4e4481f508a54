// gocount is a Go program for the tests: goroutines count in memory, handing values through
// channels, while the runtime keeps its many threads (GC, timers, syscalls).
// usage: gocount LOGFILE
// It appends "N N" every 5 ms: the count kept by one goroutine and its echo sent back by
// another through a channel; a time.Ticker paces it and garbage is made all the time.
package main

import (
	"fmt"
	"os"
	"runtime"
	"time"
)

func main() {
	runtime.GOMAXPROCS(2)
	f, err := os.Create(os.Args[1])
	if err != nil {
		os.Exit(3)
	}
	ping, pong := make(chan int), make(chan int)
	go func() {
		for n := range ping {
			pong <- n
		}
	}()
	go func() { // keep the GC busy
		var keep [][]byte
		for {
			keep = append(keep, make([]byte, 4096))
			if len(keep) > 1000 {
				keep = nil
			}
			time.Sleep(time.Millisecond)
		}
	}()
	tick := time.NewTicker(5 * time.Millisecond)
	for n := 1; ; n++ {
		<-tick.C
		ping <- n
		echo := <-pong
		if _, err := fmt.Fprintf(f, "%d %d\n", n, echo); err != nil {
			os.Exit(4)
		}
	}
}
