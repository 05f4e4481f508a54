// epollgone: an epoll instance watching an fd number the process no longer holds.
// usage: epollgone DIR
// It watches an eventfd with epoll, dups the eventfd and closes the fd it watched: the epoll
// item lives on (the file is still open) under a number that is now free. Such an epoll
// cannot be filled again by a restore. It counts in DIR/count.log every 5 ms; DIR/ready appears
// once it is set up.
#include <fcntl.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	int ev = eventfd(0, EFD_CLOEXEC);
	struct epoll_event e = {.events = EPOLLIN, .data.u64 = 42};
	if (ep < 0 || ev < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e) < 0)
		return 3;
	int keep = dup(ev);
	close(ev);
	char path[512];
	snprintf(path, sizeof path, "%s/count.log", argv[1]);
	int log = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
	for (long n = 1;; n++) {
		dprintf(log, "%ld\n", n);
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	(void)keep;
}
