// tsync: threads under a seccomp filter installed with SECCOMP_FILTER_FLAG_TSYNC, and a POSIX
// timer that signals one of the threads (SIGEV_THREAD_ID), as sandboxed servers have.
// usage: tsync DIR
// Two worker threads count in DIR/count.log; the filter makes getppid fail with EPERM; the
// timer sends SIGUSR2 to the second worker every 10 ms, which counts them. It creates
// DIR/ready; on SIGUSR1 it appends to DIR/report "ok" when getppid still fails with EPERM in
// every thread and the timer still ticks, else "bad:"; SIGTERM ends it (default action).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t usr1, ticks;
static void on_usr1(int sig) { usr1++; }
static void on_usr2(int sig) { ticks++; }

static volatile int tid2, eperm[2];
static int logfd;

static void *worker(void *arg) {
	long i = (long)arg;
	if (i == 1)
		tid2 = syscall(SYS_gettid);
	for (long n = 1;; n++) {
		errno = 0;
		eperm[i] = syscall(SYS_getppid) < 0 && errno == EPERM;
		if (i == 0)
			dprintf(logfd, "%ld\n", n);
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	char path[512];
	snprintf(path, sizeof path, "%s/count.log", argv[1]);
	logfd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	struct sigaction act = {0};
	act.sa_handler = on_usr1;
	sigaction(SIGUSR1, &act, NULL);
	act.sa_handler = on_usr2;
	sigaction(SIGUSR2, &act, NULL);
	// The workers take SIGUSR2 only through the timer; SIGUSR1 goes to the main thread.
	sigset_t usr1set;
	sigemptyset(&usr1set);
	sigaddset(&usr1set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &usr1set, NULL);
	pthread_t t[2];
	for (long i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, worker, (void *)i);
	pthread_sigmask(SIG_UNBLOCK, &usr1set, NULL);
	while (!tid2)
		usleep(1000);
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {4, f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog) != 0)
		return 3;
	struct sigevent sev = {.sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGUSR2};
	sev._sigev_un._tid = tid2;
	timer_t tm;
	struct itimerspec its = {{0, 10 * 1000 * 1000}, {0, 10 * 1000 * 1000}};
	if (timer_create(CLOCK_MONOTONIC, &sev, &tm) < 0 || timer_settime(tm, 0, &its, NULL) < 0)
		return 4;
	snprintf(path, sizeof path, "%s/report", argv[1]);
	int rfd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	usleep(30000);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	for (int seen = 0;;) {
		while (usr1 == seen) // not pause: a signal taken before it would be missed
			usleep(2000);
		seen = usr1;
		int before = ticks;
		usleep(100000);
		errno = 0;
		int main_eperm = syscall(SYS_getppid) < 0 && errno == EPERM;
		if (main_eperm && eperm[0] && eperm[1] && ticks > before)
			dprintf(rfd, "ok\n");
		else
			dprintf(rfd, "bad: eperm %d %d %d ticks %d\n", main_eperm, eperm[0], eperm[1], ticks - before);
	}
}
