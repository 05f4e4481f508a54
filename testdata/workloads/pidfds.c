// pidfds: a parent holding a pidfd of its child, as Go's os/exec and Python's asyncio do.
// usage: pidfds DIR [parent]   (parent: the pidfd is of its own parent instead, outside)
// The child sleeps in a loop. The parent opens a pidfd of it (non-blocking) and creates
// DIR/ready. On SIGUSR1 it polls the pidfd (not readable while the child lives), kills the
// child through it (pidfd_send_signal), waits for it through it (waitid P_PIDFD), and
// appends "alive=<0|1> reaped=<pid> child=<pid>" to DIR/report.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { usr1 = 1; }

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	pid_t child = argc > 2 ? 0 : fork();
	if (argc <= 2 && child == 0) {
		for (;;) {
			struct timespec ts = {0, 10 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
	}
	int pfd = syscall(SYS_pidfd_open, argc > 2 ? getppid() : child, O_NONBLOCK);
	if (pfd < 0) {
		perror("pidfd_open");
		return 1;
	}
	struct sigaction act = {0};
	act.sa_handler = on_usr1;
	sigaction(SIGUSR1, &act, NULL);
	char path[512];
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	while (!usr1) // not pause: a signal taken between the test and pause() would be missed
		usleep(2000);
	struct pollfd p = {pfd, POLLIN, 0};
	int exited = poll(&p, 1, 0);
	syscall(SYS_pidfd_send_signal, pfd, SIGKILL, NULL, 0);
	siginfo_t si = {0};
	int w;
	while ((w = waitid(P_PIDFD, pfd, &si, WEXITED)) < 0 && errno == EAGAIN) { // the pidfd is non-blocking
		struct timespec ts = {0, 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	char line[128];
	int n = snprintf(line, sizeof line, "alive=%d reaped=%d child=%d\n", exited == 0, w == 0 ? si.si_pid : -1, child);
	snprintf(path, sizeof path, "%s/report", argv[1]);
	int r = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	write(r, line, n);
	for (;;)
		pause();
}
