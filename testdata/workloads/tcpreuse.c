// tcpreuse: a TCP listener without SO_REUSEADDR whose port its accepted connection shares,
// held under an fd number above the connection's (so a restore meets the connection first).
// usage: tcpreuse DIR
// It listens on 127.0.0.1, connects to itself, accepts, moves the listener to fd 20 and
// creates DIR/ready. On each SIGUSR1 it sends a byte over the connection, accepts a second
// connection on the listener, and appends to DIR/report "ok", or "bad:" and what failed.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "report.h"

static int l, c, a;
static struct sockaddr_in sa = {.sin_family = AF_INET};

static void check(void) {
	char b;
	int c2 = socket(AF_INET, SOCK_STREAM, 0), a2 = -1;
	if (send(c, "x", 1, 0) != 1 || recv(a, &b, 1, 0) != 1 || b != 'x')
		bad("the connection");
	else if (connect(c2, (struct sockaddr *)&sa, sizeof sa) || (a2 = accept(l, NULL, NULL)) < 0)
		badv("the listener (errno)", errno, 0);
	close(c2);
	close(a2);
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int rfd = report_open(argv[1]);
	l = socket(AF_INET, SOCK_STREAM, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof sa;
	if (bind(l, (struct sockaddr *)&sa, sizeof sa) || listen(l, 4) || getsockname(l, (struct sockaddr *)&sa, &len))
		return 3;
	c = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(c, (struct sockaddr *)&sa, sizeof sa))
		return 4;
	a = accept(l, NULL, NULL);
	if (a < 0 || dup2(l, 20) != 20)
		return 5;
	close(l);
	l = 20;
	report_loop(rfd, argv[1], check);
}
