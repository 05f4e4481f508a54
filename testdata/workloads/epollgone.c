// epollgone: an epoll instance watching an fd number the process no longer holds.
// usage: epollgone DIR [taken]
// It watches an eventfd with epoll, dups the eventfd and closes the fd it watched: the epoll
// item lives on (the file is still open) under a number that is now free. With "taken", a
// file opened next takes that number, so that no restore could put the eventfd there again.
// It counts in DIR/count.log every 5 ms; DIR/ready appears once it is set up. On each
// SIGUSR1 it writes to the eventfd (through the dup), waits on the epoll and appends to
// DIR/report "ok" when the item fires with its data, else "bad".
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { usr1++; }

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	char path[512];
	snprintf(path, sizeof path, "%s/report", argv[1]);
	int rfd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	snprintf(path, sizeof path, "%s/count.log", argv[1]);
	int log = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	int ev = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	struct epoll_event e = {.events = EPOLLIN, .data.u64 = 42};
	if (ep < 0 || ev < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e) < 0)
		return 3;
	int keep = dup(ev);
	close(ev);
	if (argc > 2 && !strcmp(argv[2], "taken"))
		open("/dev/null", O_RDONLY);
	struct sigaction act = {0};
	act.sa_handler = on_usr1;
	sigaction(SIGUSR1, &act, NULL);
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
	int seen = 0;
	for (long n = 1;; n++) {
		dprintf(log, "%ld\n", n);
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
		if (usr1 != seen) {
			seen = usr1;
			unsigned long long one = 1, got;
			write(keep, &one, sizeof one);
			struct epoll_event out = {0};
			int k = epoll_wait(ep, &out, 1, 1000);
			read(keep, &got, sizeof got);
			dprintf(rfd, k == 1 && out.data.u64 == 42 && (out.events & EPOLLIN) ? "ok\n" : "bad: epoll_wait %d data %llu\n", k, (unsigned long long)out.data.u64);
		}
	}
}
