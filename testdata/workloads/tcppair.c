// tcppair: a parent and a child talking over a TCP loopback connection.
// usage: tcppair DIR
// The parent listens on 127.0.0.1 (port written to DIR/port), the child connects; the parent
// sends "N\n" every 2 ms, the child takes what is there every 20 ms (so bytes are in flight in
// both kernels' queues) and appends it to DIR/read.log.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void nap(long ms) {
	struct timespec ts = {0, ms * 1000 * 1000};
	nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int l = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof sa;
	if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 4) < 0 || getsockname(l, (struct sockaddr *)&sa, &len) < 0)
		return 3;
	if (fork() == 0) {
		close(l);
		int c = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(c, (struct sockaddr *)&sa, sizeof sa) < 0)
			return 4;
		char path[512];
		snprintf(path, sizeof path, "%s/read.log", argv[1]);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		for (;;) {
			char buf[4096];
			ssize_t n = read(c, buf, sizeof buf);
			if (n <= 0)
				return 5;
			if (write(fd, buf, n) != n)
				return 6;
			nap(20);
		}
	}
	int s = accept(l, NULL, NULL);
	if (s < 0)
		return 7;
	char path[512];
	snprintf(path, sizeof path, "%s/port", argv[1]);
	FILE *f = fopen(path, "w");
	fprintf(f, "%d\n", ntohs(sa.sin_port));
	fclose(f);
	for (long n = 1;; n++) {
		char buf[32];
		int k = snprintf(buf, sizeof buf, "%ld\n", n);
		if (write(s, buf, k) != k)
			return 8;
		nap(2);
	}
}
