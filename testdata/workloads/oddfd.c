// oddfd: a counter (see counter.c) that also holds a packet socket on fd 4, a kind of file
// gocr does not handle.
// usage: oddfd LOGFILE
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644); // fd 3
	if (fd != 3 || socket(AF_PACKET, SOCK_DGRAM, 0) != 4)
		return 3;
	for (long n = 1;; n++) {
		char buf[64];
		int len = snprintf(buf, sizeof buf, "%ld\n", n);
		if (write(fd, buf, len) != len)
			return 4;
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
