// gohttp is a Go HTTP server for the tests: GET /count returns a counter kept in memory and
// bumped by each request; a goroutine also counts in the background.
// usage: gohttp ADDR
package main

import (
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"
)

func main() {
	var mu sync.Mutex
	requests, ticks := 0, 0
	go func() {
		for range time.Tick(time.Millisecond) {
			mu.Lock()
			ticks++
			mu.Unlock()
		}
	}()
	http.HandleFunc("/count", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		fmt.Fprintf(w, "%d %d\n", requests, ticks)
		mu.Unlock()
	})
	if err := http.ListenAndServe(os.Args[1], nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
