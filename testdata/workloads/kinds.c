// kinds: holds the less common kinds of files and mappings, and reports them on SIGUSR1.
// usage: kinds DIR
// A timerfd armed for 1 h (interval 2 s), a signalfd on SIGUSR2 with one SIGUSR2 pending, an
// inotify instance watching DIR (watch 2; watch 1 was removed), a memfd "gocr-test" holding
// "memfd bytes" at offset 3 and also mapped shared, and a private /dev/zero mapping holding
// "zero map". On SIGUSR1 it writes 'F' at offset 3 through the memfd's mapping and
// creates DIR/touched and appends to DIR/report:
//   timer=<seconds left, rounded> sig=<signo read from the signalfd> inotify=<wd>:<name>
//   memfd=<content from the offset> zero=<mapping content>
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { usr1++; }

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int tfd = timerfd_create(CLOCK_MONOTONIC, 0);
	struct itimerspec its = {{2, 0}, {3600, 0}};
	timerfd_settime(tfd, 0, &its, NULL);
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	sigprocmask(SIG_BLOCK, &s, NULL);
	int sfd = signalfd(-1, &s, SFD_NONBLOCK);
	raise(SIGUSR2);
	int in = inotify_init1(IN_NONBLOCK);
	int w1 = inotify_add_watch(in, "/", IN_CREATE);
	inotify_rm_watch(in, w1);
	inotify_add_watch(in, argv[1], IN_CREATE);
	char drain[4096];
	while (read(in, drain, sizeof drain) > 0) // the IN_IGNORED of watch 1
		;
	int m = memfd_create("gocr-test", 0);
	write(m, "memfd bytes", 11);
	lseek(m, 3, SEEK_SET);
	char *mm = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
	int z = open("/dev/zero", O_RDWR);
	char *zm = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE, z, 0);
	close(z);
	strcpy(zm, "zero map");
	struct sigaction act = {0};
	act.sa_handler = on_usr1;
	sigaction(SIGUSR1, &act, NULL);
	char path[512];
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	while (!usr1) {
		struct timespec ts = {0, 2 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	snprintf(path, sizeof path, "%s/touched", argv[1]);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	struct itimerspec cur;
	timerfd_gettime(tfd, &cur);
	struct signalfd_siginfo si = {0};
	read(sfd, &si, sizeof si);
	char ev[4096] = {0};
	usleep(10000);
	ssize_t n = read(in, ev, sizeof ev);
	char iname[300] = "none";
	int wd = 0;
	if (n > 0) {
		struct inotify_event *e = (struct inotify_event *)ev;
		wd = e->wd;
		snprintf(iname, sizeof iname, "%.255s", e->name);
	}
	mm[3] = 'F'; // through the mapping: the fd must see it
	char mb[32] = {0};
	read(m, mb, sizeof mb - 1);
	char line[512];
	int len = snprintf(line, sizeof line, "timer=%ld sig=%u inotify=%d:%s memfd=%s zero=%s\n",
			   (long)(cur.it_value.tv_sec + (cur.it_value.tv_nsec > 500000000)), si.ssi_signo, wd, iname, mb, zm);
	snprintf(path, sizeof path, "%s/report", argv[1]);
	int rfd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	write(rfd, line, len);
	for (;;)
		pause();
}
