// sysvshm: a parent and a child sharing a System V shared memory segment, already removed
// (IPC_RMID) as careful programs do once attached. The parent bumps "ping" and logs
// "ping echo" to LOGFILE every 5 ms; the child copies ping into echo. The segment's id is
// written to LOGFILE.id.
// usage: sysvshm LOGFILE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/shm.h>
#include <time.h>
#include <unistd.h>

struct shared {
	volatile long ping, echo;
};

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int id = shmget(IPC_PRIVATE, 8192, IPC_CREAT | 0600);
	struct shared *sh = shmat(id, NULL, 0);
	if (id < 0 || sh == (void *)-1)
		return 3;
	shmctl(id, IPC_RMID, NULL);
	char path[512];
	snprintf(path, sizeof path, "%s.id", argv[1]);
	FILE *f = fopen(path, "w");
	fprintf(f, "%d\n", id);
	fclose(f);
	struct timespec ts = {0, 5 * 1000 * 1000};
	if (fork() == 0) {
		for (;;) {
			sh->echo = sh->ping;
			nanosleep(&ts, NULL);
		}
	}
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	for (;;) {
		sh->ping++;
		char buf[64];
		int n = snprintf(buf, sizeof buf, "%ld %ld\n", sh->ping, sh->echo);
		write(fd, buf, n);
		nanosleep(&ts, NULL);
	}
}
