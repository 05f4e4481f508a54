// many: a process with many threads or many open files, for the benchmarks.
// usage: many DIR threads N | many DIR fds N
// With threads, N-1 threads sleep in a loop beside the main one; with fds, N regular files
// are open (each its own open file description). DIR/ready appears when all are in place.
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void *sleeper(void *arg) {
	for (;;) {
		struct timespec ts = {0, 50 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

int main(int argc, char **argv) {
	if (argc < 4)
		return 2;
	int n = atoi(argv[3]);
	char path[512];
	if (strcmp(argv[2], "threads") == 0) {
		for (int i = 1; i < n; i++) {
			pthread_t t;
			if (pthread_create(&t, NULL, sleeper, NULL) != 0)
				return 3;
		}
	} else {
		snprintf(path, sizeof path, "%s/data", argv[1]);
		for (int i = 0; i < n; i++)
			if (open(path, O_RDWR | O_CREAT, 0644) < 0)
				return 4;
	}
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	sleeper(NULL);
}
