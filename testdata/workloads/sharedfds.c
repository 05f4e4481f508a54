// sharedfds: a counter (see counter.c) with a child made by clone(CLONE_FILES) without
// CLONE_VM: the two processes share one fd table.
// usage: sharedfds DIR
// Both count, in DIR/count.log and DIR/child.log; DIR/ready appears once both run.
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void count(const char *dir, const char *name) {
	char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	int log = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	for (long n = 1;; n++) {
		dprintf(log, "%ld\n", n);
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	// Like fork (the child runs on a copy of the stack), with the fd table shared.
	long pid = syscall(SYS_clone, CLONE_FILES | SIGCHLD, 0, 0, 0, 0);
	if (pid < 0)
		return 3;
	if (pid == 0)
		count(argv[1], "child.log");
	usleep(20000);
	char path[512];
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	count(argv[1], "count.log");
}
