// threadfork: a child forked by a worker thread, not by the main thread.
// usage: threadfork DIR
// The main thread starts a thread, which forks a child; the child appends its count to
// DIR/child.log every 5 ms, the main thread to DIR/main.log. The child is listed under the
// worker thread only (/proc/PID/task/TID/children): a dump that looks at the main thread's
// children alone takes the parent without it.
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *dir;

static void count(const char *name) {
	char path[512], buf[32];
	snprintf(path, sizeof path, "%s/%s.log", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	for (long n = 1;; n++) {
		int len = snprintf(buf, sizeof buf, "%ld\n", n);
		if (write(fd, buf, len) != len)
			return;
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

static void *worker(void *arg) {
	if (fork() == 0)
		count("child");
	for (;;)
		pause();
	return arg;
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	dir = argv[1];
	pthread_t t;
	pthread_create(&t, NULL, worker, NULL);
	count("main");
}
