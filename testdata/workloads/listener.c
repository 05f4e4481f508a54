// listener: a server that listens on TCP and on a unix socket but accepts only when asked.
// usage: listener DIR
// Listens on 127.0.0.1 (port written to DIR/port) and on DIR/sock, and creates DIR/ready.
// On each SIGUSR1 it accepts one connection on each, reads a line from each, and appends
// "tcp=<line> unix=<line>" to DIR/report.
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { usr1 = 1; }

static void readline(int fd, char *buf, int n) {
	int k = 0;
	while (k < n - 1 && read(fd, buf + k, 1) == 1 && buf[k] != '\n')
		k++;
	buf[k] = 0;
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int t = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	int u = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un ua = {.sun_family = AF_UNIX};
	snprintf(ua.sun_path, sizeof ua.sun_path, "%s/sock", argv[1]);
	if (bind(t, (struct sockaddr *)&a, sizeof a) || listen(t, 8) || getsockname(t, (struct sockaddr *)&a, &len) ||
	    bind(u, (struct sockaddr *)&ua, sizeof ua) || listen(u, 8)) {
		perror("listen");
		return 1;
	}
	struct sigaction act = {0};
	act.sa_handler = on_usr1;
	sigaction(SIGUSR1, &act, NULL);
	char path[512];
	snprintf(path, sizeof path, "%s/port", argv[1]);
	FILE *f = fopen(path, "w");
	fprintf(f, "%d\n", ntohs(a.sin_port));
	fclose(f);
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	for (;;) {
		while (!usr1) // not pause: a signal taken between the test and pause() would be missed
			usleep(2000);
		usr1 = 0;
		char tl[64], ul[64], line[160];
		int c = accept(t, NULL, NULL);
		readline(c, tl, sizeof tl);
		int d = accept(u, NULL, NULL);
		readline(d, ul, sizeof ul);
		int n = snprintf(line, sizeof line, "tcp=%s unix=%s\n", tl, ul);
		close(c), close(d);
		snprintf(path, sizeof path, "%s/report", argv[1]);
		int r = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
		write(r, line, n);
		close(r);
	}
}
