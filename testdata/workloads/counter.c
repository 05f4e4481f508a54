// counter: counts in its heap and on its stack and logs each value to a file.
// usage: counter LOGFILE
// Every 5 ms it appends "N N\n" (heap value, stack value) with write(2) at the fd's own
// position, so a restore that loses memory, the file position or the fd shows as a gap,
// a repeat or a mismatch in the log.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	long *heap = malloc(sizeof(long) * 1024);
	*heap = 0;
	volatile long stack = 0;
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return 3;
	for (;;) {
		(*heap)++;
		stack++;
		char buf[64];
		int n = snprintf(buf, sizeof buf, "%ld %ld\n", *heap, (long)stack);
		if (write(fd, buf, n) != n)
			return 4;
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
