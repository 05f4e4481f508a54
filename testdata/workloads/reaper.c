// reaper: waits for a child it did not start (one a restore gave it) and writes its pid and
// how it ended to FILE, as CRaC's restorewait does.
// usage: reaper FILE
#include <fcntl.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int st;
	pid_t pid = wait(&st);
	if (pid < 0)
		return 3;
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	dprintf(fd, "%d %d\n", pid, WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st));
	return 0;
}
