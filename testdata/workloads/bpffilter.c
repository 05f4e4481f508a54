// bpffilter: a counter (see counter.c) with a UDP socket that has an eBPF socket filter
// (SO_ATTACH_BPF), which cannot be read back.
// usage: bpffilter DIR
// It counts in DIR/count.log every 5 ms; DIR/ready appears once the filter is attached.
#include <fcntl.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "report.h"

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	// r0 = 0xffff (keep the packet); exit
	struct bpf_insn prog[] = {
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0xffff},
		{.code = BPF_JMP | BPF_EXIT},
	};
	union bpf_attr attr;
	memset(&attr, 0, sizeof attr);
	attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
	attr.insns = (unsigned long)prog;
	attr.insn_cnt = 2;
	attr.license = (unsigned long)"GPL";
	int pfd = syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	if (pfd < 0 || setsockopt(s, SOL_SOCKET, SO_ATTACH_BPF, &pfd, sizeof pfd) < 0)
		return 3;
	close(pfd);
	count_forever(argv[1], "count.log", 1);
}
