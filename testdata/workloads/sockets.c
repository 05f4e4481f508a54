// sockets: unix sockets holding queued messages, and a listener.
// usage: sockets DIR
// A datagram pair holds "one" and "two", a seqpacket pair "seq", a stream pair "stream bytes"
// with the sender shut down; DIR/sock listens. On SIGUSR1 it reads them all, accepts one
// connection and writes "hello from server" to it, then appends to DIR/report:
//   dgram=one|two seq=seq stream=stream bytes,eof accepted=1
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { usr1++; }

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int dg[2], sq[2], st[2];
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) < 0 || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sq) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, st) < 0)
		return 3;
	send(dg[0], "one", 3, 0);
	send(dg[0], "two", 3, 0);
	send(sq[1], "seq", 3, 0);
	send(st[0], "stream bytes", 12, 0);
	shutdown(st[0], SHUT_WR);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s/sock", argv[1]);
	int l = socket(AF_UNIX, SOCK_STREAM, 0);
	if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 5) < 0)
		return 4;
	struct sigaction act = {0};
	act.sa_handler = on_usr1;
	sigaction(SIGUSR1, &act, NULL);
	char path[512];
	snprintf(path, sizeof path, "%s/report", argv[1]);
	int rfd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	while (!usr1) {
		struct timespec ts = {0, 2 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	char d[64] = {0}, q[64] = {0}, s[64] = {0}, b[16];
	ssize_t n = recv(dg[1], b, sizeof b, MSG_DONTWAIT);
	if (n > 0) strncat(d, b, n);
	strcat(d, "|");
	n = recv(dg[1], b, sizeof b, MSG_DONTWAIT);
	if (n > 0) strncat(d, b, n);
	n = recv(sq[0], q, sizeof q - 1, MSG_DONTWAIT);
	size_t got = 0;
	while ((n = recv(st[1], s + got, sizeof s - 1 - got, 0)) > 0)
		got += n;
	const char *eof = n == 0 ? "eof" : "noeof";
	int c = accept(l, NULL, NULL);
	if (c >= 0)
		write(c, "hello from server", 17);
	char line[256];
	int len = snprintf(line, sizeof line, "dgram=%s seq=%s stream=%s,%s accepted=%d\n", d, q, s, eof, c >= 0);
	write(rfd, line, len);
	for (;;)
		pause();
}
