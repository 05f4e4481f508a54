// tree: a tree of four processes sharing one anonymous shared page.
// usage: tree DIR
// root forks a and b; a forks c; b leads its own process group. Each process appends its
// counter to DIR/<name>.log every 5 ms. Through the shared page, root bumps "ping" and a
// copies it into "echo"; root logs "ping echo" to DIR/shared.log, so echo keeps following
// ping only while the page is really shared.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

struct shared {
	volatile long ping, echo;
};

static void loop(const char *dir, const char *name, struct shared *sh) {
	char path[512];
	snprintf(path, sizeof path, "%s/%s.log", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	snprintf(path, sizeof path, "%s/shared.log", dir);
	int sfd = strcmp(name, "root") == 0 ? open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644) : -1;
	long n = 0;
	for (;;) {
		char buf[64];
		int len = snprintf(buf, sizeof buf, "%ld\n", ++n);
		if (write(fd, buf, len) != len)
			exit(4);
		if (strcmp(name, "root") == 0) {
			sh->ping++;
			len = snprintf(buf, sizeof buf, "%ld %ld\n", sh->ping, sh->echo);
			if (write(sfd, buf, len) != len)
				exit(4);
		} else if (strcmp(name, "a") == 0) {
			sh->echo = sh->ping;
		}
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	struct shared *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return 3;
	if (fork() == 0) {
		if (fork() == 0)
			loop(argv[1], "c", sh);
		loop(argv[1], "a", sh);
	}
	if (fork() == 0) {
		setpgid(0, 0);
		loop(argv[1], "b", sh);
	}
	loop(argv[1], "root", sh);
}
