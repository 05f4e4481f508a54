// devmapped: counts in a shared mapping of a device, as a program driving a device's memory.
// usage: devmapped DIR DEVICE
// Maps one page of DEVICE at offset 4096, shared, closes the fd, and every 5 ms bumps the
// number at the start of the page and appends it to DIR/count.log. DIR/ready appears once
// it has counted.
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	int fd = open(argv[2], O_RDWR);
	if (fd < 0)
		return 1;
	volatile uint64_t *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 4096);
	if (m == MAP_FAILED)
		return 3;
	close(fd);
	char path[512];
	snprintf(path, sizeof path, "%s/count.log", argv[1]);
	int log = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	for (int i = 0;; i++) {
		uint64_t v = ++m[0];
		dprintf(log, "%llu %llu\n", (unsigned long long)v, (unsigned long long)v);
		if (i == 3) {
			snprintf(path, sizeof path, "%s/ready", argv[1]);
			close(open(path, O_WRONLY | O_CREAT, 0644));
		}
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
