// epoll: an epoll instance watching an eventfd (semaphore, count 5) and a pipe holding one
// byte, edge-triggered. On SIGUSR1 it appends to DIR/report:
//   ready=<data of the ready items, sorted> sem=<value read from the eventfd> left=<count left>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { usr1++; }

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int efd = eventfd(5, EFD_SEMAPHORE | EFD_NONBLOCK);
	int p[2];
	if (efd < 0 || pipe(p) < 0 || write(p[1], "x", 1) != 1)
		return 3;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 111};
	epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
	ev.events = EPOLLIN | EPOLLET;
	ev.data.u64 = 222;
	epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);
	struct sigaction sa = {0};
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	char path[512];
	snprintf(path, sizeof path, "%s/report", argv[1]);
	int rfd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	int done = 0;
	for (;;) {
		if (usr1 != done) {
			done = usr1;
			struct epoll_event out[4];
			int n = epoll_wait(ep, out, 4, 0);
			uint64_t a = 0, b = 0;
			for (int i = 0; i < n; i++) {
				if (out[i].data.u64 == 111) a = 111;
				if (out[i].data.u64 == 222) b = 222;
			}
			uint64_t v = 0;
			read(efd, &v, 8);
			int left = 0;
			uint64_t w;
			while (read(efd, &w, 8) == 8)
				left++;
			char line[128];
			int len = snprintf(line, sizeof line, "ready=%lu,%lu sem=%lu left=%d\n", (unsigned long)a,
					   (unsigned long)b, (unsigned long)v, left);
			write(rfd, line, len);
		}
		struct timespec ts = {0, 2 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
