// nsjob: a tree of three that logs what it sees of itself, for restores into namespaces.
// usage: nsjob DIR [HOSTNAME]
// With HOSTNAME it first sets its host name (it runs in a UTS namespace of its own). root
// forks a, a forks b. Every 5 ms each appends "N PID PPID HOSTNAME" to DIR/<name>.log, with
// getpid(), getppid() and gethostname() as it sees them, so a restore that changes its pids,
// its parent or its names shows in the log.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void loop(const char *dir, const char *name) {
	char path[512];
	snprintf(path, sizeof path, "%s/%s.log", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		exit(3);
	for (long n = 1;; n++) {
		char host[128] = "";
		gethostname(host, sizeof host - 1);
		char buf[256];
		int len = snprintf(buf, sizeof buf, "%ld %d %d %s\n", n, getpid(), getppid(), host);
		if (write(fd, buf, len) != len)
			exit(4);
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	if (argc > 2 && sethostname(argv[2], strlen(argv[2])) != 0)
		return 5;
	if (fork() == 0) {
		if (fork() == 0)
			loop(argv[1], "b");
		loop(argv[1], "a");
	}
	loop(argv[1], "root");
}
