// ptimer: POSIX and interval timers. Timer A (SIGUSR2 to the process, every 5 ms) bumps a
// counter in its handler; timer B (SIGEV_NONE) is armed for an hour; ITIMER_REAL (SIGALRM,
// every 5 ms) bumps another. The main loop appends the first counter to LOGFILE every 20 ms;
// on SIGUSR1 it appends "b=<seconds left on B, rounded> alarms=<second counter> ticks=<first>".
// usage: ptimer LOGFILE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t ticks, usr1, alarms;
static void on_usr2(int sig) { ticks++; }
static void on_alrm(int sig) { alarms++; }
static void on_usr1(int sig) { usr1++; }

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	struct sigaction sa = {0};
	sa.sa_handler = on_usr2;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR2, &sa, NULL);
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_alrm;
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval iv = {{0, 5000}, {0, 5000}};
	setitimer(ITIMER_REAL, &iv, NULL);
	timer_t a, b;
	struct sigevent ea = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR2};
	struct sigevent eb = {.sigev_notify = SIGEV_NONE};
	if (timer_create(CLOCK_MONOTONIC, &ea, &a) < 0 || timer_create(CLOCK_MONOTONIC, &eb, &b) < 0)
		return 3;
	struct itimerspec ia = {{0, 5000000}, {0, 5000000}}, ib = {{0, 0}, {3600, 0}};
	timer_settime(a, 0, &ia, NULL);
	timer_settime(b, 0, &ib, NULL);
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	int reported = 0;
	for (;;) {
		char line[64];
		int n = snprintf(line, sizeof line, "%d\n", ticks);
		if (usr1 != reported) {
			reported = usr1;
			struct itimerspec cur;
			timer_gettime(b, &cur);
			n = snprintf(line, sizeof line, "b=%ld alarms=%d ticks=%d\n", (long)(cur.it_value.tv_sec + (cur.it_value.tv_nsec > 500000000)), alarms, ticks);
		}
		write(fd, line, n);
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
