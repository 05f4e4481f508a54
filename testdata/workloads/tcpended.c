// tcpended: a counter (see counter.c) that holds a TCP socket whose connection was reset by
// its peer: closed, but still open in the process.
// usage: tcpended DIR
// It counts in DIR/count.log every 5 ms; DIR/ready appears once the connection has ended.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "report.h"

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof sa;
	if (bind(l, (struct sockaddr *)&sa, sizeof sa) || listen(l, 1) || getsockname(l, (struct sockaddr *)&sa, &len))
		return 3;
	int c = socket(AF_INET, SOCK_STREAM, 0);
	int a;
	if (connect(c, (struct sockaddr *)&sa, sizeof sa) || (a = accept(l, NULL, NULL)) < 0)
		return 4;
	struct linger lg = {1, 0}; // close with a reset
	setsockopt(a, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	close(a);
	close(l);
	for (int i = 0; i < 100; i++) {
		struct tcp_info ti;
		socklen_t n = sizeof ti;
		if (getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &n) == 0 && ti.tcpi_state == TCP_CLOSE)
			break;
		usleep(1000);
	}
	count_forever(argv[1], "count.log", 1);
}
