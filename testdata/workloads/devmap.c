// devmap: maps DIR/dev/region (a file standing in for a device) shared, keeps it open at fd 3
// 100 bytes from its end, and counts in the mapping: every 5 ms it bumps the number at byte
// 64 of the mapping and appends it to DIR/count.log. DIR/ready appears when all is set.
// With "pair", a child does the same with DIR/dev/peer.signal and DIR/peer.log, and the
// parent's file is DIR/dev/region.wait instead.
// usage: devmap DIR [pair]
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int run(const char *dir, const char *file, const char *logname, const char *ready);

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	char path[512];
	snprintf(path, sizeof path, "%s/dev", argv[1]);
	mkdir(path, 0755);
	if (argc > 2) {
		if (fork() == 0)
			return run(argv[1], "peer.signal", "peer.log", "ready-peer");
		return run(argv[1], "region.wait", "count.log", "ready");
	}
	return run(argv[1], "region", "count.log", "ready");
}

static int run(const char *dir, const char *file, const char *logname, const char *ready) {
	char path[512];
	snprintf(path, sizeof path, "%s/dev/%s", dir, file);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd != 3 || ftruncate(fd, 4096) < 0)
		return 3;
	char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return 4;
	strcpy(m, "DEVICE-STATE");
	lseek(fd, 4096 - 100, SEEK_SET);
	snprintf(path, sizeof path, "%s/%s", dir, logname);
	int log = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	snprintf(path, sizeof path, "%s/%s", dir, ready);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	volatile long *n = (long *)(m + 64);
	for (;;) {
		(*n)++;
		char buf[64];
		int len = snprintf(buf, sizeof buf, "%ld %ld\n", *n, *n);
		if (write(log, buf, len) != len)
			return 5;
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
