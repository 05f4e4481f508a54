// ghost: deleted files a process still holds, as a database's temporary files are.
// usage: ghost DIR
// DIR/sparse gets "head" at 0, "tail" at 1 MiB (a hole between), owner 1234:5678, mode 0640
// and a modification time of 2001-02-03 04:05:06.7; DIR/mapped is mapped shared and written
// through the mapping. Both are unlinked and kept open. It creates DIR/ready; on each SIGUSR1
// it checks both files' owner, mode, size, times, holes (blocks allocated) and content, and
// appends to DIR/report "ok", or "bad:" and what differs.
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "report.h"



#define MIB (1 << 20)
static int sparse, mapped;
static char *map;
static const struct timespec mtime = {981173106, 700000000};

static void check(void) {
	struct stat st;
	fstat(sparse, &st);
	if (st.st_uid != 1234 || st.st_gid != 5678)
		badv("sparse owner", st.st_uid * 100000L + st.st_gid, 1234 * 100000L + 5678);
	if ((st.st_mode & 07777) != 0640)
		badv("sparse mode", st.st_mode & 07777, 0640);
	if (st.st_size != MIB + 4)
		badv("sparse size", st.st_size, MIB + 4);
	if (st.st_mtim.tv_sec != mtime.tv_sec || st.st_mtim.tv_nsec != mtime.tv_nsec)
		badv("sparse mtime(ms)", st.st_mtim.tv_sec * 1000L + st.st_mtim.tv_nsec / 1000000, mtime.tv_sec * 1000L + mtime.tv_nsec / 1000000);
	if (st.st_blocks * 512 >= MIB / 2)
		badv("sparse bytes allocated (a hole was filled)", st.st_blocks * 512, 8192);
	if (st.st_nlink != 0)
		badv("sparse links", st.st_nlink, 0);
	char b[5] = {0};
	if (pread(sparse, b, 4, 0) != 4 || strcmp(b, "head"))
		badv("sparse head", 0, 1);
	if (pread(sparse, b, 4, MIB) != 4 || strcmp(b, "tail"))
		badv("sparse tail", 0, 1);
	if (pread(sparse, b, 4, 4096) != 4 || memcmp(b, "\0\0\0\0", 4))
		badv("sparse hole reads zeros", 0, 1);
	// The shared mapping and the file are one: what one holds, the other reads.
	if (pread(mapped, b, 4, 8192) != 4 || memcmp(b, map + 8192, 4) || memcmp(b, "page", 4))
		badv("mapped content", 0, 1);
	map[100] = 'Z';
	if (pread(mapped, b, 1, 100) != 1 || b[0] != 'Z')
		badv("mapping writes reach the file", 0, 1);
	map[100] = 'a';
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	char path[512];
	snprintf(path, sizeof path, "%s/sparse", argv[1]);
	sparse = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (sparse < 0 || pwrite(sparse, "head", 4, 0) != 4 || pwrite(sparse, "tail", 4, MIB) != 4 ||
	    fchown(sparse, 1234, 5678) < 0 || fchmod(sparse, 0640) < 0)
		return 3;
	struct timespec times[2] = {mtime, mtime};
	if (futimens(sparse, times) < 0 || unlink(path) < 0)
		return 4;
	snprintf(path, sizeof path, "%s/mapped", argv[1]);
	mapped = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (mapped < 0 || ftruncate(mapped, 3 * 4096) < 0)
		return 5;
	map = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mapped, 0);
	if (map == MAP_FAILED || unlink(path) < 0)
		return 6;
	memset(map, 'a', 4096);
	memcpy(map + 8192, "page", 4);
	int rfd = report_open(argv[1]);
	report_loop(rfd, argv[1], check);
}
