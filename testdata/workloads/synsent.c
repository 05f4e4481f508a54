// synsent: a TCP connect in progress (SYN_SENT) to a server that does not answer yet (its
// accept queue is full), as a client started before its server has room.
// usage: synsent DIR PORT
// It connects, non-blocking, to 127.0.0.1:PORT and creates DIR/ready once the socket is in
// SYN_SENT. At each SIGUSR1 it checks that the socket keeps its local port and is still
// connecting, or, once DIR/expect-connected exists, that the connection is made (within 5 s)
// to PORT, and reports (see report.h).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "report.h"

static int s, port, local;
static char dir[400];

static int state(void) {
	struct tcp_info ti;
	socklen_t n = sizeof ti;
	return getsockopt(s, IPPROTO_TCP, TCP_INFO, &ti, &n) < 0 ? -1 : ti.tcpi_state;
}

static int local_port(void) {
	struct sockaddr_in sa;
	socklen_t n = sizeof sa;
	return getsockname(s, (struct sockaddr *)&sa, &n) < 0 ? -1 : ntohs(sa.sin_port);
}

static void check(void) {
	if (local_port() != local)
		badv("local port", local_port(), local);
	char path[600];
	struct stat st;
	snprintf(path, sizeof path, "%s/expect-connected", dir);
	if (stat(path, &st) < 0) {
		if (state() != TCP_SYN_SENT)
			badv("state", state(), TCP_SYN_SENT);
		return;
	}
	struct pollfd p = {s, POLLOUT, 0};
	int err = -1;
	socklen_t n = sizeof err;
	if (poll(&p, 1, 5000) != 1 || getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &n) < 0 || err != 0)
		badv("connect (SO_ERROR)", err, 0);
	struct sockaddr_in sa;
	n = sizeof sa;
	if (getpeername(s, (struct sockaddr *)&sa, &n) < 0 || ntohs(sa.sin_port) != port)
		badv("peer port", ntohs(sa.sin_port), port);
}

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	snprintf(dir, sizeof dir, "%s", argv[1]);
	port = atoi(argv[2]);
	s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (connect(s, (struct sockaddr *)&sa, sizeof sa) == 0 || errno != EINPROGRESS)
		return 3;
	for (int i = 0; i < 100 && state() != TCP_SYN_SENT; i++)
		usleep(1000);
	local = local_port();
	report_loop(report_open(dir), dir, check);
}
