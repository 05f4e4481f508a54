// sigio: signal-driven I/O (O_ASYNC) on a pipe and a socket, as event loops without epoll do.
// usage: sigio DIR [outside]
// The pipe's read end is owned by the process (F_SETOWN) and signals SIGRTMIN+1 (F_SETSIG,
// with the fd in si_fd); the socket's is owned by the main thread (F_SETOWN_EX F_OWNER_TID)
// and signals SIGIO. It creates DIR/ready. On each SIGUSR1 it checks the owners, signals
// and O_ASYNC flags, writes to both, waits for both signals, and appends to DIR/report
// "ok", or "bad:" and what differs. With "outside", the socket's signals go to the parent
// process instead (which the dump must refuse: the restore could not name it).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "report.h"

static volatile sig_atomic_t rt_fd = -1, io_count;
static void on_rt(int sig, siginfo_t *si, void *uc) { rt_fd = si->si_fd; }
static void on_io(int sig) { io_count++; }


static int p[2], s[2], tid, owner_type = F_OWNER_TID, owner;

static void check(void) {
	struct f_owner_ex o;
	if (fcntl(p[0], F_GETOWN_EX, &o) < 0 || o.type != F_OWNER_PID || o.pid != getpid())
		badv("pipe owner", o.pid, getpid());
	if (fcntl(p[0], F_GETSIG) != SIGRTMIN + 1)
		badv("pipe F_GETSIG", fcntl(p[0], F_GETSIG), SIGRTMIN + 1);
	if (!(fcntl(p[0], F_GETFL) & O_ASYNC))
		badv("pipe O_ASYNC", 0, 1);
	if (fcntl(s[0], F_GETOWN_EX, &o) < 0 || o.type != owner_type || o.pid != owner)
		badv("socket owner (type*1000000+pid)", o.type * 1000000 + o.pid, owner_type * 1000000 + owner);
	if (fcntl(s[0], F_GETSIG) != 0)
		badv("socket F_GETSIG", fcntl(s[0], F_GETSIG), 0);
	if (!(fcntl(s[0], F_GETFL) & O_ASYNC))
		badv("socket O_ASYNC", 0, 1);
	rt_fd = -1;
	int before = io_count;
	char c;
	write(p[1], "x", 1);
	send(s[1], "y", 1, 0);
	for (int i = 0; i < 500 && (rt_fd < 0 || io_count == before); i++) {
		struct timespec ts = {0, 2 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	if (rt_fd != p[0])
		badv("SIGRTMIN+1 si_fd", rt_fd, p[0]);
	if (io_count == before && owner == tid)
		badv("SIGIO from the socket", 0, 1);
	read(p[0], &c, 1);
	recv(s[0], &c, 1, 0);
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	if (pipe2(p, O_NONBLOCK) < 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s) < 0)
		return 3;
	tid = syscall(SYS_gettid);
	struct sigaction act = {0};
	act.sa_sigaction = on_rt;
	act.sa_flags = SA_SIGINFO;
	sigaction(SIGRTMIN + 1, &act, NULL);
	act.sa_flags = 0;
	act.sa_handler = on_io;
	sigaction(SIGIO, &act, NULL);
	owner = tid;
	if (argc > 2 && !strcmp(argv[2], "outside"))
		owner_type = F_OWNER_PID, owner = getppid();
	struct f_owner_ex o = {owner_type, owner};
	if (fcntl(p[0], F_SETOWN, getpid()) < 0 || fcntl(p[0], F_SETSIG, SIGRTMIN + 1) < 0 ||
	    fcntl(p[0], F_SETFL, fcntl(p[0], F_GETFL) | O_ASYNC) < 0 || fcntl(s[0], F_SETOWN_EX, &o) < 0 ||
	    fcntl(s[0], F_SETFL, fcntl(s[0], F_GETFL) | O_ASYNC) < 0)
		return 4;
	int rfd = report_open(argv[1]);
	report_loop(rfd, argv[1], check);
}
