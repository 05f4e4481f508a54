// ticker: writes "N" lines to its standard output every 5 ms, as a daemon logging to a pipe.
// usage: ticker
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(void) {
	for (long n = 1;; n++) {
		dprintf(1, "%ld\n", n);
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
