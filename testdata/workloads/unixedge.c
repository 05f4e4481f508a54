// unixedge: unix sockets in the states the plain pairs do not cover.
// usage: unixedge DIR   (DIR/ext must be a datagram socket bound by someone else)
// - a stream socket whose peer wrote "bye" and closed;
// - a datagram socket bound at DIR/srv, holding "m1" and "m2" sent by a second datagram
//   socket connected one way to it;
// - a datagram socket connected one way to DIR/ext, outside the process.
// It creates DIR/ready. On SIGUSR1 it reads the stream socket to its end, takes srv's
// datagrams, sends "m3" through the connected one and takes it too, sends "hello-ext" to
// DIR/ext, and appends to DIR/report: "pair=<bytes> eof=<last read> srv=<datagrams>".
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { usr1++; }

static struct sockaddr_un addr(const char *dir, const char *name) {
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof a.sun_path, "%s/%s", dir, name);
	return a;
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int s[2];
	socketpair(AF_UNIX, SOCK_STREAM, 0, s);
	write(s[1], "bye", 3);
	close(s[1]);
	struct sockaddr_un srv_a = addr(argv[1], "srv"), ext_a = addr(argv[1], "ext");
	int srv = socket(AF_UNIX, SOCK_DGRAM, 0), cli = socket(AF_UNIX, SOCK_DGRAM, 0), ext = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (bind(srv, (struct sockaddr *)&srv_a, sizeof srv_a) || connect(cli, (struct sockaddr *)&srv_a, sizeof srv_a) ||
	    connect(ext, (struct sockaddr *)&ext_a, sizeof ext_a)) {
		perror("set up");
		return 1;
	}
	send(cli, "m1", 2, 0);
	send(cli, "m2", 2, 0);
	struct sigaction act = {0};
	act.sa_handler = on_usr1;
	sigaction(SIGUSR1, &act, NULL);
	sigset_t none, usr;
	sigemptyset(&usr);
	sigaddset(&usr, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr, &none);
	char path[512];
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	while (!usr1)
		sigsuspend(&none);
	char pair[64] = {0}, srvs[64] = {0}, b[16];
	int n = read(s[0], pair, sizeof pair - 1);
	int eof = read(s[0], b, sizeof b);
	send(cli, "m3", 2, 0);
	for (int i = 0; i < 3; i++) {
		n = recv(srv, b, sizeof b - 1, MSG_DONTWAIT);
		if (n < 0)
			break;
		b[n] = 0;
		if (i)
			strcat(srvs, ",");
		strcat(srvs, b);
	}
	send(ext, "hello-ext", 9, 0);
	char line[256];
	int len = snprintf(line, sizeof line, "pair=%s eof=%d srv=%s\n", pair, eof, srvs);
	snprintf(path, sizeof path, "%s/report", argv[1]);
	int r = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	write(r, line, len);
	for (;;)
		pause();
}
