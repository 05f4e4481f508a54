// closewait: a server whose client closed its side (CLOSE_WAIT), as a busy server holds one
// until it notices.
// usage: closewait DIR [6]
// It listens on 127.0.0.1, or ::1 with "6" (port in DIR/port), accepts one connection and reads it to its
// end-of-file. At each SIGUSR1 it checks the connection is in CLOSE_WAIT and still gives
// end-of-file, sends "after\n" to the client (whose reading side is open), and reports (see
// report.h).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "report.h"

static int a;

static void check(void) {
	struct tcp_info ti;
	socklen_t n = sizeof ti;
	if (getsockopt(a, IPPROTO_TCP, TCP_INFO, &ti, &n) < 0 || ti.tcpi_state != TCP_CLOSE_WAIT)
		badv("state", ti.tcpi_state, TCP_CLOSE_WAIT);
	char b[8];
	if (recv(a, b, sizeof b, MSG_DONTWAIT) != 0)
		bad("no end-of-file");
	if (send(a, "after\n", 6, MSG_NOSIGNAL) != 6)
		bad("send to the client");
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int v6 = argc > 2 && !strcmp(argv[2], "6");
	int l = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct sockaddr_in6 sa6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	struct sockaddr *a0 = v6 ? (struct sockaddr *)&sa6 : (struct sockaddr *)&sa;
	socklen_t len = v6 ? sizeof sa6 : sizeof sa;
	if (bind(l, a0, len) || listen(l, 1) || getsockname(l, a0, &len))
		return 3;
	char path[600];
	snprintf(path, sizeof path, "%s/port", argv[1]);
	FILE *f = fopen(path, "w");
	fprintf(f, "%d\n", ntohs(v6 ? sa6.sin6_port : sa.sin_port));
	fclose(f);
	if ((a = accept(l, NULL, NULL)) < 0)
		return 4;
	close(l);
	char b[64];
	while (recv(a, b, sizeof b, 0) > 0)
		;
	report_loop(report_open(argv[1]), argv[1], check);
}
