// aioring: a process with a Linux AIO context holding completions it has not read yet.
// usage: aioring DIR
// io_setup(8), then three one-byte writes to DIR/data (data 101, 102, 103) whose completions
// land in the ring at once; it reads the first only. It creates DIR/ready, and on SIGUSR1
// reads the two waiting completions, submits one more write (data 104) and reads it, and
// appends to DIR/report "events=<data>,<data> more=<data> ctx=<same|changed>".
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { usr1 = 1; }

static aio_context_t ctx;
static int fd;
static char buf[1] = {'x'};

static int submit(uint64_t data, int64_t off) {
	struct iocb cb = {0};
	struct iocb *p = &cb;
	cb.aio_data = data;
	cb.aio_lio_opcode = IOCB_CMD_PWRITE;
	cb.aio_fildes = fd;
	cb.aio_buf = (uint64_t)buf;
	cb.aio_nbytes = 1;
	cb.aio_offset = off;
	return syscall(SYS_io_submit, ctx, 1, &p) == 1 ? 0 : -1;
}

static long getevents(long min, long max, struct io_event *ev) {
	struct timespec ts = {5, 0};
	return syscall(SYS_io_getevents, ctx, min, max, ev, &ts);
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	char path[512];
	snprintf(path, sizeof path, "%s/data", argv[1]);
	fd = open(path, O_WRONLY | O_CREAT, 0644);
	if (fd < 0 || syscall(SYS_io_setup, 8, &ctx)) {
		perror("set up");
		return 1;
	}
	aio_context_t first = ctx;
	struct io_event ev[4];
	if (submit(101, 0) || submit(102, 1) || submit(103, 2) || getevents(1, 1, ev) != 1) {
		perror("aio");
		return 1;
	}
	struct sigaction act = {0};
	act.sa_handler = on_usr1;
	sigaction(SIGUSR1, &act, NULL);
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	while (!usr1) // not pause: a signal taken between the test and pause() would be missed
		usleep(2000);
	char line[256];
	long n = getevents(2, 2, ev);
	int len;
	if (n != 2) {
		len = snprintf(line, sizeof line, "events: got %ld\n", n);
	} else {
		uint64_t a = ev[0].data, b = ev[1].data;
		long m = submit(104, 3) == 0 ? getevents(1, 1, ev + 2) : -1;
		len = snprintf(line, sizeof line, "events=%llu,%llu more=%llu ctx=%s\n", (unsigned long long)a, (unsigned long long)b,
			       m == 1 ? (unsigned long long)ev[2].data : 0ull, ctx == first ? "same" : "changed");
	}
	snprintf(path, sizeof path, "%s/report", argv[1]);
	int r = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	write(r, line, len);
	for (;;)
		pause();
}
