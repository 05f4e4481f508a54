// rootcwd: a process in a chroot, or whose working directory was removed.
// usage: rootcwd DIR chroot|deleted
// chroot: it makes DIR/jail/sub and DIR/jail/marker, chroots into DIR/jail and works in /sub.
// deleted: it works in DIR/gone/deeper (mode 0751), then removes both directories.
// It writes "ready" to DIR/report; on each SIGUSR1 it checks where it is and appends "ok", or
// "bad:" and what differs.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "report.h"



static int jail;
static char gone[600];

static void check(void) {
	char cwd[512];
	struct stat st;
	if (jail) {
		if (!getcwd(cwd, sizeof cwd) || strcmp(cwd, "/sub"))
			bad("cwd is not /sub");
		if (stat("/marker", &st) < 0)
			bad("/marker not found: not in the jail");
		if (stat("../marker", &st) < 0)
			bad("../marker not found");
		return;
	}
	errno = 0;
	if (getcwd(cwd, sizeof cwd) || errno != ENOENT)
		bad("getcwd does not fail with ENOENT");
	if (stat(".", &st) < 0 || st.st_nlink != 0 || !S_ISDIR(st.st_mode) || (st.st_mode & 07777) != 0751)
		bad("the working directory is not a removed directory of mode 0751");
	char link[700];
	ssize_t n = readlink("/proc/self/cwd", link, sizeof link - 1);
	link[n > 0 ? n : 0] = 0;
	if (strcmp(link, gone))
		bad("/proc/self/cwd is not the old path, deleted");
	// Creating a file in a removed directory fails.
	if (open("f", O_WRONLY | O_CREAT, 0600) >= 0 || errno != ENOENT)
		bad("a file could be created in it");
}

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	char path[512];
	int rfd = report_open(argv[1]);
	if (!strcmp(argv[2], "chroot")) {
		jail = 1;
		snprintf(path, sizeof path, "%s/jail", argv[1]);
		mkdir(path, 0755);
		snprintf(path, sizeof path, "%s/jail/sub", argv[1]);
		mkdir(path, 0755);
		snprintf(path, sizeof path, "%s/jail/marker", argv[1]);
		close(open(path, O_WRONLY | O_CREAT, 0644));
		snprintf(path, sizeof path, "%s/jail", argv[1]);
		if (chroot(path) < 0 || chdir("/sub") < 0)
			return 3;
	} else {
		snprintf(path, sizeof path, "%s/gone", argv[1]);
		mkdir(path, 0755);
		char deeper[560];
		snprintf(deeper, sizeof deeper, "%s/deeper", path);
		mkdir(deeper, 0751);
		chmod(deeper, 0751);
		if (chdir(deeper) < 0 || rmdir(deeper) < 0 || rmdir(path) < 0)
			return 4;
		snprintf(gone, sizeof gone, "%s (deleted)", deeper);
	}
	report_loop(rfd, NULL, check);
}
