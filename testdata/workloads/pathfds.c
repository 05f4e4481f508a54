// pathfds: fds that are not plain opens of files: O_PATH on a file and on a directory, O_PATH
// with O_NOFOLLOW on a symlink, the process's own /proc files, and a deleted file whose
// directory was removed too.
// usage: pathfds DIR
// It creates DIR/ready; on each SIGUSR1 it checks each fd and appends to DIR/report "ok", or
// "bad:" and what differs.
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "report.h"


static char dir[512];

static int pfile, pdir, plink, status, gone;
static char gonepath[700];

static int flags_are(int fd, int want) { return (fcntl(fd, F_GETFL) & (O_PATH | O_ACCMODE | O_NOFOLLOW)) == want; }

static void check(void) {
	struct stat st;
	char b[700];
	if (!flags_are(pfile, O_PATH) || fstat(pfile, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size != 5)
		bad("O_PATH file");
	if (!flags_are(pdir, O_PATH) || fstatat(pdir, "file", &st, 0) < 0)
		bad("O_PATH directory (openat through it)");
	// An O_PATH|O_NOFOLLOW fd of a symlink is the link itself: readlinkat with "" reads it.
	ssize_t n = readlinkat(plink, "", b, sizeof b - 1);
	if (n < 0 || (b[n] = 0, strcmp(b, "file")) || fstat(plink, &st) < 0 || !S_ISLNK(st.st_mode))
		bad("O_PATH|O_NOFOLLOW symlink");
	// /proc/self/status of this process: its Pid line is ours.
	n = pread(status, b, sizeof b - 1, 0);
	b[n > 0 ? n : 0] = 0;
	char want[64];
	snprintf(want, sizeof want, "\nPid:\t%d\n", getpid());
	if (!strstr(b, want))
		bad("/proc/PID/status is not this process's");
	if (pread(gone, b, 4, 0) != 4 || memcmp(b, "kept", 4) || fstat(gone, &st) < 0 || st.st_nlink != 0)
		bad("deleted file of a removed directory");
	snprintf(want, sizeof want, "/proc/self/fd/%d", gone);
	n = readlink(want, b, sizeof b - 1);
	b[n > 0 ? n : 0] = 0;
	if (strcmp(b, gonepath))
		bad("deleted file's path");
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	char path[600];
	snprintf(dir, sizeof dir, "%s", argv[1]);
	snprintf(path, sizeof path, "%s/file", dir);
	int fd = open(path, O_WRONLY | O_CREAT, 0644);
	write(fd, "hello", 5);
	close(fd);
	snprintf(path, sizeof path, "%s/link", dir);
	symlink("file", path);
	snprintf(path, sizeof path, "%s/file", dir);
	pfile = open(path, O_PATH);
	pdir = open(dir, O_PATH | O_DIRECTORY);
	snprintf(path, sizeof path, "%s/link", dir);
	plink = open(path, O_PATH | O_NOFOLLOW);
	status = open("/proc/self/status", O_RDONLY);
	snprintf(path, sizeof path, "%s/sub", dir);
	mkdir(path, 0755);
	snprintf(path, sizeof path, "%s/sub/tmp", dir);
	gone = open(path, O_RDWR | O_CREAT, 0600);
	write(gone, "kept", 4);
	snprintf(gonepath, sizeof gonepath, "%s (deleted)", path);
	unlink(path);
	snprintf(path, sizeof path, "%s/sub", dir);
	if (pfile < 0 || pdir < 0 || plink < 0 || status < 0 || gone < 0 || rmdir(path) < 0)
		return 3;
	int rfd = report_open(dir);
	report_loop(rfd, dir, check);
}
