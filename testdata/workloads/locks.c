// locks: holds file locks of every kind, in two processes, and reports on SIGUSR1.
// usage: locks DIR
// The parent takes flock(LOCK_EX) on DIR/flock, POSIX locks on DIR/posix (write on bytes
// 10-19, read from byte 100 to the end) and an OFD read lock on bytes 0-4 of DIR/ofd. Its
// child takes a POSIX write lock on bytes 50-59 of DIR/posix. Both then wait; on SIGUSR1 the
// parent releases its write lock on bytes 10-19 and appends "unlocked" to DIR/report.
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { usr1++; }

static int open_in(const char *dir, const char *name) {
	char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	return open(path, O_RDWR | O_CREAT, 0644);
}

static int posix_lock(int fd, int cmd, short type, off_t start, off_t len) {
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
	return fcntl(fd, cmd, &fl);
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int f = open_in(argv[1], "flock");
	int p = open_in(argv[1], "posix");
	int o = open_in(argv[1], "ofd");
	if (f < 0 || p < 0 || o < 0 || flock(f, LOCK_EX | LOCK_NB) ||
	    posix_lock(p, F_SETLK, F_WRLCK, 10, 10) || posix_lock(p, F_SETLK, F_RDLCK, 100, 0) ||
	    posix_lock(o, F_OFD_SETLK, F_RDLCK, 0, 5)) {
		perror("lock");
		return 1;
	}
	struct sigaction act = {0};
	act.sa_handler = on_usr1;
	sigaction(SIGUSR1, &act, NULL);
	pid_t child = fork();
	if (child == 0) {
		if (posix_lock(p, F_SETLK, F_WRLCK, 50, 10)) {
			perror("child lock");
			return 1;
		}
		for (;;)
			pause();
	}
	usleep(20000);
	close(open_in(argv[1], "ready"));
	// Not pause: a SIGUSR1 taken between the test and the pause would leave it waiting.
	while (!usr1)
		usleep(2000);
	posix_lock(p, F_SETLK, F_UNLCK, 10, 10);
	int r = open_in(argv[1], "report");
	lseek(r, 0, SEEK_END);
	write(r, "unlocked\n", 9);
	for (;;)
		pause();
}
