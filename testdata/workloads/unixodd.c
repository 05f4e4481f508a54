// unixodd: unix sockets in states that need care to make again.
// usage: unixodd DIR
//   cycle: datagram sockets bound to DIR/a and DIR/b, each connected to the other;
//   gone: a stream listener bound to DIR/sub/s, whose file and directory were removed since;
//   fifo: a datagram socket bound to DIR/t, whose file was removed and replaced by a FIFO
//         (which the process holds open).
// It creates DIR/ready; on each SIGUSR1 it checks them and appends to DIR/report "ok", or
// "bad:" and what differs.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "report.h"


static char dir[400];

static struct sockaddr_un addr(const char *name) {
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s", dir, name);
	return sa;
}

static int a, b, s, t, fifo;

static int named(int fd, const char *name) {
	struct sockaddr_un got = {0}, want = addr(name);
	socklen_t n = sizeof got;
	return getsockname(fd, (struct sockaddr *)&got, &n) == 0 && !strcmp(got.sun_path, want.sun_path);
}

static void check(void) {
	char m[8] = {0};
	if (send(a, "ab", 2, 0) != 2 || recv(b, m, sizeof m, MSG_DONTWAIT) != 2 || strcmp(m, "ab"))
		bad("cycle: a to b");
	memset(m, 0, sizeof m);
	if (send(b, "ba", 2, 0) != 2 || recv(a, m, sizeof m, MSG_DONTWAIT) != 2 || strcmp(m, "ba"))
		bad("cycle: b to a");
	if (!named(a, "a") || !named(b, "b"))
		bad("cycle: names");
	if (!named(s, "sub/s"))
		bad("gone: name");
	char e[64];
	if (accept(s, NULL, NULL) >= 0 || errno != EAGAIN) {
		snprintf(e, sizeof e, "gone: not a listener (errno %d)", errno);
		bad(e);
	}
	struct stat st;
	char path[600];
	snprintf(path, sizeof path, "%s/sub", dir);
	if (stat(path, &st) == 0)
		bad("gone: the directory is back");
	if (!named(t, "t"))
		bad("fifo: name");
	snprintf(path, sizeof path, "%s/t", dir);
	if (stat(path, &st) < 0 || !S_ISFIFO(st.st_mode))
		bad("fifo: DIR/t is not the FIFO");
	if (write(fifo, "f", 1) != 1 || read(fifo, m, 1) != 1 || m[0] != 'f')
		bad("fifo: does not carry bytes");
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	snprintf(dir, sizeof dir, "%s", argv[1]);
	a = socket(AF_UNIX, SOCK_DGRAM, 0);
	b = socket(AF_UNIX, SOCK_DGRAM, 0);
	struct sockaddr_un sa = addr("a"), sb = addr("b"), ss = addr("sub/s"), st = addr("t");
	if (bind(a, (struct sockaddr *)&sa, sizeof sa) || bind(b, (struct sockaddr *)&sb, sizeof sb) ||
	    connect(a, (struct sockaddr *)&sb, sizeof sb) || connect(b, (struct sockaddr *)&sa, sizeof sa))
		return 3;
	char path[600];
	snprintf(path, sizeof path, "%s/sub", dir);
	mkdir(path, 0755);
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (bind(s, (struct sockaddr *)&ss, sizeof ss) || listen(s, 4) || unlink(ss.sun_path) || rmdir(path))
		return 4;
	t = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (bind(t, (struct sockaddr *)&st, sizeof st) || unlink(st.sun_path) || mkfifo(st.sun_path, 0600))
		return 5;
	fifo = open(st.sun_path, O_RDWR | O_NONBLOCK);
	if (fifo < 0)
		return 6;
	int rfd = report_open(dir);
	report_loop(rfd, dir, check);
}
