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

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { usr1++; }

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	char path[512];
	snprintf(path, sizeof path, "%s/report", argv[1]);
	int rfd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof sa;
	if (bind(l, (struct sockaddr *)&sa, sizeof sa) || listen(l, 4) || getsockname(l, (struct sockaddr *)&sa, &len))
		return 3;
	int c = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(c, (struct sockaddr *)&sa, sizeof sa))
		return 4;
	int a = accept(l, NULL, NULL);
	if (a < 0 || dup2(l, 20) != 20)
		return 5;
	close(l);
	l = 20;
	struct sigaction act = {0};
	act.sa_handler = on_usr1;
	sigaction(SIGUSR1, &act, NULL);
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	for (int seen = 0;;) {
		while (usr1 == seen) {
			struct timespec ts = {0, 2 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
		seen = usr1;
		char b;
		int c2 = socket(AF_INET, SOCK_STREAM, 0), a2 = -1;
		if (send(c, "x", 1, 0) != 1 || recv(a, &b, 1, 0) != 1 || b != 'x')
			dprintf(rfd, "bad: the connection\n");
		else if (connect(c2, (struct sockaddr *)&sa, sizeof sa) || (a2 = accept(l, NULL, NULL)) < 0)
			dprintf(rfd, "bad: the listener (errno %d)\n", errno);
		else
			dprintf(rfd, "ok\n");
		close(c2);
		close(a2);
	}
}
