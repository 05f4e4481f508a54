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

#include "report.h"

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	// Like fork (the child runs on a copy of the stack), with the fd table shared.
	long pid = syscall(SYS_clone, CLONE_FILES | SIGCHLD, 0, 0, 0, 0);
	if (pid < 0)
		return 3;
	if (pid == 0)
		count_forever(argv[1], "child.log", 0);
	usleep(20000);
	count_forever(argv[1], "count.log", 1);
}
