// tstp: a job stopped by SIGTSTP (Ctrl-Z), and the shell-like parent that waits for it.
// usage: tstp DIR
// The child makes a process group of its own (the parent's session: not orphaned) and counts;
// the parent stops it with SIGTSTP, sees it stop (WSTOPSIG), and creates DIR/ready. On each
// SIGUSR1 the parent waits (up to 2 s) for the child to report a stop again, which each dump
// and restore does when it stops it again, and appends to DIR/report "ok" when it reports
// SIGTSTP, or "bad:" and what it got.
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { usr1++; }

static void nap(long ms) {
	struct timespec ts = {0, ms * 1000 * 1000};
	nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	pid_t child = fork();
	if (child == 0) {
		setpgid(0, 0);
		for (;;)
			nap(5);
	}
	setpgid(child, child);
	kill(child, SIGTSTP);
	int st;
	if (waitpid(child, &st, WUNTRACED) != child || !WIFSTOPPED(st) || WSTOPSIG(st) != SIGTSTP)
		return 3;
	struct sigaction act = {0};
	act.sa_handler = on_usr1;
	sigaction(SIGUSR1, &act, NULL);
	char path[512];
	snprintf(path, sizeof path, "%s/report", argv[1]);
	int rfd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	for (int seen = 0;;) {
		while (usr1 == seen)
			nap(2);
		seen = usr1;
		siginfo_t si;
		int got = 0;
		for (int i = 0; i < 1000 && !got; i++) {
			memset(&si, 0, sizeof si);
			if (waitid(P_PID, child, &si, WSTOPPED | WNOHANG) == 0 && si.si_pid == child)
				got = 1;
			else
				nap(2);
		}
		if (got && si.si_code == CLD_STOPPED && si.si_status == SIGTSTP)
			dprintf(rfd, "ok\n");
		else
			dprintf(rfd, "bad: stop report %d, code %d, signal %d\n", got, si.si_code, si.si_status);
	}
}
