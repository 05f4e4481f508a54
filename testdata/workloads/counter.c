// counter: counts in its heap, its stack and a file, once every 10 ms.
// usage: counter OUTFILE. Writes the counter to OUTFILE (overwriting) each tick.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <time.h>

int main(int argc, char **argv) {
	if (argc < 2) return 2;
	long *heap = malloc(sizeof(long) * 1024);
	*heap = 0;
	volatile long stack = 0;
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) return 3;
	for (;;) {
		(*heap)++;
		stack++;
		char buf[64];
		int n = snprintf(buf, sizeof buf, "%ld %ld\n", *heap, (long)stack);
		if (pwrite(fd, buf, n, 0) != n) return 4;
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
