// xstate: keeps a counter in all four 64-bit lanes of %ymm15 and one in memory, forever.
// usage: xstate LOGFILE
// Only raw syscalls run in the loop (the kernel keeps vector registers across them), so %ymm15
// lives in the registers the whole time. Each step adds 1 to every lane and to the memory
// counter, then compares; every 200 steps it appends "N ok" or "N bad" to LOGFILE. A restore
// that loses the XSTATE (or its upper halves) shows as "bad".
#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long raw3(long nr, long a, long b, long c) {
	long ret;
	__asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return ret;
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return 3;
	static const long long one[4] __attribute__((aligned(32))) = {1, 1, 1, 1};
	__asm__ volatile("vpxor %%ymm15, %%ymm15, %%ymm15" ::: "xmm15");
	long n = 0;
	struct timespec ts = {0, 20 * 1000};
	for (;;) {
		long long lanes[4] __attribute__((aligned(32)));
		n++;
		__asm__ volatile("vpaddq %1, %%ymm15, %%ymm15\n\tvmovdqa %%ymm15, %0"
				 : "=m"(lanes) : "m"(one) : "xmm15", "memory");
		int ok = lanes[0] == n && lanes[1] == n && lanes[2] == n && lanes[3] == n;
		if (!ok || n % 200 == 0) {
			char buf[64];
			int len = 0;
			long v = n;
			char tmp[24];
			int k = 0;
			do { tmp[k++] = '0' + v % 10; v /= 10; } while (v);
			while (k)
				buf[len++] = tmp[--k];
			const char *s = ok ? " ok\n" : " bad\n";
			while (*s)
				buf[len++] = *s++;
			raw3(SYS_write, fd, (long)buf, len);
			if (!ok)
				raw3(SYS_exit, 1, 0, 0);
		}
		raw3(SYS_nanosleep, (long)&ts, 0, 0);
	}
}
