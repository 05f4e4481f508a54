// pipetrees: two separate process trees joined by a pipe, or by a unix stream socketpair.
// usage: pipetrees DIR [socket]
// It makes a pipe, forks a writer and a reader, writes "WRITER READER\n" to DIR/pids and
// exits, so that the two become roots of their own trees. The writer sends "N\n" every 2 ms;
// the reader takes what is there every 20 ms (so bytes are in flight) and appends it to
// DIR/read.log.
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

static void nap(long ms) {
	struct timespec ts = {0, ms * 1000 * 1000};
	nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int p[2];
	if (argc > 2 ? socketpair(AF_UNIX, SOCK_STREAM, 0, p) < 0 : pipe(p) < 0)
		return 3;
	pid_t w = fork();
	if (w == 0) {
		close(p[0]);
		for (long n = 1;; n++) {
			char buf[32];
			int len = snprintf(buf, sizeof buf, "%ld\n", n);
			if (write(p[1], buf, len) != len)
				return 4;
			nap(2);
		}
	}
	pid_t r = fork();
	if (r == 0) {
		close(p[1]);
		char path[512];
		snprintf(path, sizeof path, "%s/read.log", argv[1]);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		for (;;) {
			char buf[4096];
			ssize_t n = read(p[0], buf, sizeof buf);
			if (n <= 0)
				return 5;
			if (write(fd, buf, n) != n)
				return 6;
			nap(20);
		}
	}
	char path[512];
	snprintf(path, sizeof path, "%s/pids", argv[1]);
	FILE *f = fopen(path, "w");
	fprintf(f, "%d %d\n", w, r);
	fclose(f);
	return 0;
}
