// plugfiles: four processes, each with three files open under DIR/claimed/ (the example
// plugin's files in the tests). Process i writes "N\n" lines to its first file, pI-0, every
// 5 ms, at the fd's own position; the others sit at known offsets. Process 1's third file is
// "link.wait" and process 2's is "link.signal". DIR/ready appears when all are open.
// usage: plugfiles DIR
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void run(const char *dir, int i) {
	char path[512];
	int fds[3];
	for (int k = 0; k < 3; k++) {
		if (k == 2 && (i == 1 || i == 2))
			snprintf(path, sizeof path, "%s/claimed/link.%s", dir, i == 1 ? "wait" : "signal");
		else
			snprintf(path, sizeof path, "%s/claimed/p%d-%d", dir, i, k);
		fds[k] = open(path, O_RDWR | O_CREAT | (k == 0 ? O_TRUNC : 0), 0644);
		if (k > 0)
			lseek(fds[k], 100 * k + i, SEEK_SET);
	}
	snprintf(path, sizeof path, "%s/ready-%d", dir, i);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	for (long n = 1;; n++) {
		char buf[32];
		int len = snprintf(buf, sizeof buf, "%ld\n", n);
		if (write(fds[0], buf, len) != len)
			_exit(4);
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	for (int i = 1; i < 4; i++)
		if (fork() == 0)
			run(argv[1], i);
	run(argv[1], 0);
}
