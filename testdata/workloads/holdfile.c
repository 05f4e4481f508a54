// holdfile: holds a file open after deleting it, as a process whose log was rotated away.
// usage: holdfile DIR FILE
// It opens FILE, unlinks it, creates DIR/ready and waits.
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	int fd = open(argv[2], O_RDONLY);
	if (fd < 0 || unlink(argv[2]))
		return 1;
	char path[512];
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	for (;;)
		pause();
}
