// sched: a process with scheduling and prctl state set away from the defaults.
// usage: sched DIR CPU   (DIR writable by user 65534)
// The main thread runs SCHED_BATCH at nice 7 on CPU only; a second thread runs SCHED_IDLE on
// CPU 0 only. Two pages are locked in memory (mlock). The process is a child subreaper, has transparent huge pages disabled, and runs
// as user 65534, yet dumpable. SIGUSR1 is blocked but while the main thread waits in
// sigsuspend. It creates DIR/ready, and on each SIGUSR1 it appends
// "subreaper=S thp=T dumpable=D blocked=B" to DIR/report: prctl's answers, and whether
// SIGUSR1 is blocked again once sigsuspend returned.
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { usr1++; }

static void *idle_thread(void *arg) {
	struct sched_param sp = {0};
	pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(0, &set);
	pthread_setaffinity_np(pthread_self(), sizeof set, &set);
	for (;;)
		pause();
	return NULL;
}

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	struct sigaction act = {0};
	act.sa_handler = on_usr1;
	sigaction(SIGUSR1, &act, NULL);
	struct sched_param sp = {0};
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(atoi(argv[2]), &set);
	if (sched_setscheduler(0, SCHED_BATCH, &sp) || setpriority(PRIO_PROCESS, 0, 7) ||
	    sched_setaffinity(0, sizeof set, &set) || prctl(PR_SET_CHILD_SUBREAPER, 1) ||
	    prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)) {
		perror("set up");
		return 1;
	}
	sigset_t none, usr;
	sigemptyset(&usr);
	sigaddset(&usr, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr, &none); // the thread made next has it blocked too
	char *locked = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(locked, 'L', 8192);
	if (mlock(locked, 8192)) {
		perror("mlock");
		return 1;
	}
	pthread_t th;
	pthread_create(&th, NULL, idle_thread, NULL);
	usleep(20000);
	char path[512];
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534) || prctl(PR_SET_DUMPABLE, 1)) {
		perror("drop privileges");
		return 1;
	}
	close(open(path, O_WRONLY | O_CREAT, 0644));
	snprintf(path, sizeof path, "%s/report", argv[1]);
	for (;;) {
		while (!usr1)
			sigsuspend(&none);
		usr1 = 0;
		char line[128];
		sigset_t cur;
		sigprocmask(SIG_BLOCK, NULL, &cur);
		int sub = 0;
		prctl(PR_GET_CHILD_SUBREAPER, &sub);
		int n = snprintf(line, sizeof line, "subreaper=%d thp=%d dumpable=%d blocked=%d\n", sub,
				 prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0), prctl(PR_GET_DUMPABLE), sigismember(&cur, SIGUSR1));
		int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
		write(fd, line, n);
		close(fd);
	}
}
