// lockcombos: file locks in the combinations programs make them.
// usage: lockcombos DIR
//   a: the parent opens DIR/a twice and takes flock(LOCK_SH) on each description;
//   b: the parent takes flock(LOCK_EX) on DIR/b and forks: the child shares the description,
//      and the parent then closes its fd (the lock stays, held by the child's);
//   c: the parent opens DIR/c twice and takes a POSIX write lock on bytes 0-9 through the first
//      fd and a POSIX read lock on bytes 20-29 through the second;
//   d: the parent takes an OFD write lock on bytes 0-9 of DIR/d and forks: the lock is the
//      shared description's, and the parent closes its fd;
//   e: on DIR/e the parent holds flock(LOCK_EX) and a POSIX write lock on bytes 5-6, the child
//      a POSIX read lock on bytes 40-49, and two descriptions hold OFD read locks on 100-109.
// It creates DIR/ready; on each SIGUSR1 the parent probes every lock from new descriptions
// (flock with LOCK_NB, F_OFD_GETLK) and appends to DIR/report "ok", or "bad:" and what differs.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "report.h"


static char dir[512];
static pid_t parent, child;

static int open_in(const char *name) {
	char path[600];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	return open(path, O_RDWR | O_CREAT, 0644);
}

static int lock(int fd, int cmd, short type, off_t start, off_t len) {
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
	return fcntl(fd, cmd, &fl);
}


// flock_state: 2 when an exclusive flock is held, 1 when only shared ones, 0 when none.
static int flock_state(const char *name) {
	int fd = open_in(name), st = 0;
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		st = 0;
	else if (flock(fd, LOCK_SH | LOCK_NB) == 0)
		st = 1;
	else
		st = 2;
	close(fd);
	return st;
}

// posix_holder: who holds a lock conflicting with a write lock on the range: a pid for a
// POSIX lock, -1 for an OFD lock, 0 for none; *type gets the lock's type.
static int holder(const char *name, off_t start, off_t len, short probe, short *type) {
	int fd = open_in(name);
	struct flock fl = {.l_type = probe, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
	int r = fcntl(fd, F_OFD_GETLK, &fl);
	close(fd);
	*type = fl.l_type;
	if (r < 0)
		return -2;
	return fl.l_type == F_UNLCK ? 0 : fl.l_pid;
}

static void expect(const char *what, const char *name, off_t start, off_t len, int who, short type) {
	short got;
	int h = holder(name, start, len, F_WRLCK, &got);
	if (h != who || (who != 0 && got != type)) {
		char b[160];
		snprintf(b, sizeof b, "%s(holder %d type %d, want %d type %d)", what, h, got, who, type);
		bad(b);
	}
}

// probe checks every lock, from a new process: closing an fd of a file drops the POSIX locks
// its process holds on it, so the parent may not open and close the files itself.
static void probe(void) {
	if (flock_state("a") != 1)
		bad("a: two shared flocks");
	if (flock_state("b") != 2)
		bad("b: the exclusive flock of the shared description");
	expect("c: POSIX write lock 0-9", "c", 0, 10, parent, F_WRLCK);
	expect("c: POSIX read lock 20-29", "c", 20, 10, parent, F_RDLCK);
	expect("c: nothing on 10-19", "c", 10, 10, 0, 0);
	expect("d: OFD write lock of the shared description", "d", 0, 10, -1, F_WRLCK);
	if (flock_state("e") != 2)
		bad("e: flock");
	expect("e: parent's POSIX lock 5-6", "e", 5, 2, parent, F_WRLCK);
	expect("e: child's POSIX lock 40-49", "e", 40, 10, child, F_RDLCK);
	expect("e: OFD read locks 100-109", "e", 100, 10, -1, F_RDLCK);
	// A read probe on the OFD read locks finds no conflict: they are read locks.
	short t;
	if (holder("e", 100, 10, F_RDLCK, &t) != 0)
		bad("e: OFD locks are not read locks");
}

static void check(void) {
	int p[2];
	pipe(p);
	pid_t pr = fork();
	if (pr == 0) {
		probe();
		write(p[1], report, strlen(report) + 1);
		_exit(0);
	}
	close(p[1]);
	memset(report, 0, sizeof report);
	read(p[0], report, sizeof report - 1);
	close(p[0]);
	waitpid(pr, NULL, 0);
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	snprintf(dir, sizeof dir, "%s", argv[1]);
	parent = getpid();
	int a1 = open_in("a"), a2 = open_in("a");
	int b = open_in("b");
	int c1 = open_in("c"), c2 = open_in("c");
	int d = open_in("d");
	int e = open_in("e"), e2 = open_in("e"), e3 = open_in("e");
	if (flock(a1, LOCK_SH) || flock(a2, LOCK_SH) || flock(b, LOCK_EX) || lock(c1, F_SETLK, F_WRLCK, 0, 10) ||
	    lock(c2, F_SETLK, F_RDLCK, 20, 10) || lock(d, F_OFD_SETLK, F_WRLCK, 0, 10) || flock(e, LOCK_EX) ||
	    lock(e, F_SETLK, F_WRLCK, 5, 2) || lock(e2, F_OFD_SETLK, F_RDLCK, 100, 10) || lock(e3, F_OFD_SETLK, F_RDLCK, 100, 10))
		return 3;
	int ready[2];
	pipe(ready);
	child = fork();
	if (child == 0) {
		close(ready[0]);
		if (lock(e, F_SETLK, F_RDLCK, 40, 10))
			return 4;
		write(ready[1], "x", 1);
		for (;;)
			pause();
	}
	char x;
	read(ready[0], &x, 1);
	close(b); // the child's copy of the description holds the flock
	close(d); // and the OFD lock
	report_loop(report_open(dir), dir, check);
}
