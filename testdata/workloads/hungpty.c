// hungpty: a process that holds a pty slave whose master was closed: the terminal went away,
// its /dev/pts entry is gone, and the fd is hung up.
// usage: hungpty DIR
// At each SIGUSR1 it checks that reading the slave gives end-of-file and writing it fails
// with EIO, and reports (see report.h).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "report.h"

static int slave;

static void check(void) {
	char b[4];
	ssize_t n = read(slave, b, sizeof b);
	if (n != 0)
		badv("read", n, 0);
	errno = 0;
	if (write(slave, "x", 1) >= 0 || errno != EIO)
		badv("write (errno)", errno, EIO);
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0)
		return 3;
	slave = open(ptsname(m), O_RDWR | O_NOCTTY);
	if (slave < 0)
		return 4;
	close(m);
	report_loop(report_open(argv[1]), argv[1], check);
}
