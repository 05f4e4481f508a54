// threads: four pthreads, each counting in a thread-local variable and on the heap.
// usage: threads DIR
// Thread i appends "N N\n" (thread-local value, heap value) to DIR/tI.log every 5 ms, with
// write(2) at its fd's own position; the main thread does the same in DIR/main.log and then
// waits in pthread_join. A restore that loses a thread, its registers or its TLS (fs_base)
// shows as a log that stops, a gap or a mismatch.
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static __thread long tls;
static const char *dir;

static void *count(void *arg) {
	long i = (long)arg;
	char path[512];
	if (i < 0)
		snprintf(path, sizeof path, "%s/main.log", dir);
	else
		snprintf(path, sizeof path, "%s/t%ld.log", dir, i);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	long *heap = malloc(sizeof *heap);
	*heap = 0;
	for (;;) {
		tls++;
		(*heap)++;
		char buf[64];
		int n = snprintf(buf, sizeof buf, "%ld %ld\n", tls, *heap);
		if (write(fd, buf, n) != n)
			exit(4);
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
		if (i < 0 && tls == 20) {
			// The main thread stops counting and blocks in pthread_join (a futex).
			pthread_t self_join;
			(void)self_join;
			break;
		}
	}
	return NULL;
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	dir = argv[1];
	pthread_t t[4];
	for (long i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, count, (void *)i);
	count((void *)-1);
	pthread_join(t[0], NULL);
	return 0;
}
