// tcphalf: a half-closed TCP connection inside the process: one end shut down for writing
// (FIN_WAIT2), the other has read its end-of-file (CLOSE_WAIT) and still sends.
// usage: tcphalf DIR [PORT]
// At each SIGUSR1 it checks the states, that the closed direction gives end-of-file and the
// open one still carries bytes, and reports (see report.h). With PORT, it connects to
// 127.0.0.1:PORT instead (a peer outside) and shuts its end down for writing: its check is
// then that the socket is still in FIN_WAIT2.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "report.h"

static int c, a, outside;

static int state(int fd) {
	struct tcp_info ti;
	socklen_t n = sizeof ti;
	return getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &n) < 0 ? -1 : ti.tcpi_state;
}

static void check(void) {
	if (outside) {
		if (state(c) != TCP_FIN_WAIT2)
			badv("state", state(c), TCP_FIN_WAIT2);
		return;
	}
	// The restored FIN may take a moment to go out and be acknowledged.
	for (int i = 0; i < 200 && (state(c) != TCP_FIN_WAIT2 || state(a) != TCP_CLOSE_WAIT); i++)
		usleep(5000);
	if (state(c) != TCP_FIN_WAIT2)
		badv("the end that shut down: state", state(c), TCP_FIN_WAIT2);
	if (state(a) != TCP_CLOSE_WAIT)
		badv("the other end: state", state(a), TCP_CLOSE_WAIT);
	char b[8];
	struct pollfd p = {a, POLLIN, 0};
	if (poll(&p, 1, 2000) != 1 || recv(a, b, sizeof b, MSG_DONTWAIT) != 0)
		bad("the closed direction does not give end-of-file");
	if (send(a, "pong", 4, 0) != 4) {
		bad("the open direction: send");
		return;
	}
	struct pollfd q = {c, POLLIN, 0};
	if (poll(&q, 1, 2000) != 1 || recv(c, b, sizeof b, 0) != 4 || memcmp(b, "pong", 4))
		bad("the open direction does not carry bytes");
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (argc > 2) {
		outside = 1;
		sa.sin_port = htons(atoi(argv[2]));
		c = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(c, (struct sockaddr *)&sa, sizeof sa))
			return 6;
		shutdown(c, SHUT_WR);
		for (int i = 0; i < 200 && state(c) != TCP_FIN_WAIT2; i++)
			usleep(1000);
		report_loop(report_open(argv[1]), argv[1], check);
	}
	int l = socket(AF_INET, SOCK_STREAM, 0);
	socklen_t len = sizeof sa;
	if (bind(l, (struct sockaddr *)&sa, sizeof sa) || listen(l, 1) || getsockname(l, (struct sockaddr *)&sa, &len))
		return 3;
	c = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(c, (struct sockaddr *)&sa, sizeof sa) || (a = accept(l, NULL, NULL)) < 0)
		return 4;
	close(l);
	shutdown(c, SHUT_WR);
	char b[8];
	if (recv(a, b, sizeof b, 0) != 0) // its end-of-file
		return 5;
	report_loop(report_open(argv[1]), argv[1], check);
}
