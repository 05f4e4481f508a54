// linkremap: a file open under a name that was removed, while another name leads to it (as
// after a log rotation by rename and link).
// usage: linkremap DIR
// It makes DIR/a holding "first", links DIR/b to it, opens DIR/a and removes that name. At each
// SIGUSR1 it checks that its fd is still the file DIR/b names (same inode), appends a line
// through the fd and finds it through DIR/b, and reports (see report.h).
#define _GNU_SOURCE
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "report.h"

static int fd;
static char b[600];

static void check(void) {
	struct stat s1, s2;
	if (fstat(fd, &s1) < 0 || stat(b, &s2) < 0 || s1.st_ino != s2.st_ino || s1.st_dev != s2.st_dev)
		bad("the fd is not the file DIR/b names");
	off_t end = lseek(fd, 0, SEEK_END);
	if (write(fd, "x", 1) != 1) {
		bad("write");
		return;
	}
	char c = 0;
	int other = open(b, O_RDONLY);
	if (other < 0 || pread(other, &c, 1, end) != 1 || c != 'x')
		bad("what the fd wrote is not in DIR/b");
	close(other);
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	char a[600];
	snprintf(a, sizeof a, "%s/a", argv[1]);
	snprintf(b, sizeof b, "%s/b", argv[1]);
	fd = open(a, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, "first", 5) != 5 || link(a, b) < 0 || unlink(a) < 0)
		return 3;
	report_loop(report_open(argv[1]), argv[1], check);
}
