// gpujob: a GPU job as a ROCm program sets it up through /dev/kfd, with the ioctls of
// linux/kfd_ioctl.h, and then works on its buffers from the CPU.
// usage: gpujob DIR [BO_KIB]
// The process forks once; parent and child each open /dev/kfd and the render node of every
// GPU of the topology (/sys/class/kfd/kfd/topology, or $KFD_TOPOLOGY), acquire a VM on each,
// ask for the apertures, set the memory policy, allocate per GPU a VRAM BO of BO_KIB KiB
// (default 1024) and a 64 KiB GTT BO and map both through the render node, allocate a USERPTR
// BO over their own memory and a doorbell BO mapped through /dev/kfd, map the BOs to the GPU,
// make a queue on the GTT BO and an event. Then every 10 ms each process checks that every BO
// holds the pattern of its last count, writes the pattern of the next, and appends
// "COUNT ROLE" to DIR/ROLE.log (ROLE: parent or child). A BO that lost its content ends the
// process with "BAD ..." in its log. DIR/ready appears once both counted.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/kfd_ioctl.h>

#define MAX_GPUS 8
#define MAX_BOS 32

struct bo {
	uint64_t *cpu;
	uint64_t size;
	uint32_t salt;
};

static int logfd = -1;
static const char *role = "parent";

static void die(const char *what) {
	if (logfd >= 0)
		dprintf(logfd, "BAD %s: %s\n", what, strerror(errno));
	fprintf(stderr, "gpujob %s: %s: %s\n", role, what, strerror(errno));
	exit(3);
}

static int kioctl(int fd, unsigned long req, void *arg) {
	int r;
	do
		r = ioctl(fd, req, arg);
	while (r < 0 && errno == EINTR);
	return r;
}

static uint64_t word(uint32_t salt, uint64_t count, uint64_t i) {
	return (count * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)salt << 40) ^ i;
}

static int read_u32(const char *path, uint32_t *v) {
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	int ok = fscanf(f, "%u", v) == 1;
	fclose(f);
	return ok ? 0 : -1;
}

static int read_prop(const char *path, const char *key, uint32_t *v) {
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	char k[128];
	unsigned long long x;
	int found = -1;
	while (fscanf(f, "%127s %llu", k, &x) == 2)
		if (!strcmp(k, key)) {
			*v = (uint32_t)x;
			found = 0;
		}
	fclose(f);
	return found;
}

// gpus lists the GPU nodes of the topology: their ids and render minors.
static int gpus(uint32_t *ids, uint32_t *minors) {
	const char *topo = getenv("KFD_TOPOLOGY");
	if (!topo)
		topo = "/sys/class/kfd/kfd/topology";
	char path[512];
	int n = 0;
	for (int node = 0; node < 64 && n < MAX_GPUS; node++) {
		uint32_t id;
		snprintf(path, sizeof path, "%s/nodes/%d/gpu_id", topo, node);
		if (read_u32(path, &id) < 0)
			break;
		if (id == 0)
			continue; // a CPU node
		snprintf(path, sizeof path, "%s/nodes/%d/properties", topo, node);
		if (read_prop(path, "drm_render_minor", &minors[n]) < 0)
			die("topology: no drm_render_minor");
		ids[n++] = id;
	}
	return n;
}

static struct bo bos[MAX_BOS];
static int nbos;

static void *alloc_bo(int kfd, int drm, uint32_t gpu, uint64_t size, uint32_t flags, void *userptr) {
	struct kfd_ioctl_alloc_memory_of_gpu_args a = {0};
	a.va_addr = userptr ? (uint64_t)(uintptr_t)userptr : 0;
	a.size = size;
	a.gpu_id = gpu;
	a.flags = flags;
	if (userptr)
		a.mmap_offset = (uint64_t)(uintptr_t)userptr;
	if (kioctl(kfd, AMDKFD_IOC_ALLOC_MEMORY_OF_GPU, &a) < 0)
		die("ALLOC_MEMORY_OF_GPU");
	struct kfd_ioctl_map_memory_to_gpu_args m = {0};
	m.handle = a.handle;
	m.device_ids_array_ptr = (uint64_t)(uintptr_t)&gpu;
	m.n_devices = 1;
	if (kioctl(kfd, AMDKFD_IOC_MAP_MEMORY_TO_GPU, &m) < 0 || m.n_success != 1)
		die("MAP_MEMORY_TO_GPU");
	if (userptr)
		return userptr;
	int fd = flags & (KFD_IOC_ALLOC_MEM_FLAGS_DOORBELL | KFD_IOC_ALLOC_MEM_FLAGS_MMIO_REMAP) ? kfd : drm;
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, a.mmap_offset);
	if (p == MAP_FAILED)
		die("mmap BO");
	return p;
}

static void setup(void) {
	int kfd = open("/dev/kfd", O_RDWR | O_CLOEXEC);
	if (kfd < 0)
		die("open /dev/kfd");
	struct kfd_ioctl_get_version_args v = {0};
	if (kioctl(kfd, AMDKFD_IOC_GET_VERSION, &v) < 0)
		die("GET_VERSION");
	uint32_t ids[MAX_GPUS], minors[MAX_GPUS];
	int n = gpus(ids, minors);
	if (n == 0) {
		errno = ENODEV;
		die("no GPU in the topology");
	}
	int drm[MAX_GPUS];
	for (int i = 0; i < n; i++) {
		char path[64];
		snprintf(path, sizeof path, "/dev/dri/renderD%u", minors[i]);
		drm[i] = open(path, O_RDWR | O_CLOEXEC);
		if (drm[i] < 0 && (errno == ENOENT || errno == EACCES || errno == EPERM)) {
			// Not ours (a container given some of the GPUs): leave it out, as ROCm does.
			memmove(&ids[i], &ids[i + 1], (n - i - 1) * sizeof ids[0]);
			memmove(&minors[i], &minors[i + 1], (n - i - 1) * sizeof minors[0]);
			n--, i--;
			continue;
		}
		if (drm[i] < 0)
			die("open render node");
		struct kfd_ioctl_acquire_vm_args a = {.drm_fd = drm[i], .gpu_id = ids[i]};
		if (kioctl(kfd, AMDKFD_IOC_ACQUIRE_VM, &a) < 0)
			die("ACQUIRE_VM");
	}
	if (n == 0) {
		errno = ENODEV;
		die("no GPU usable here");
	}
	struct kfd_process_device_apertures ap[MAX_GPUS];
	struct kfd_ioctl_get_process_apertures_new_args ga = {.kfd_process_device_apertures_ptr = (uint64_t)(uintptr_t)ap, .num_of_nodes = MAX_GPUS};
	if (kioctl(kfd, AMDKFD_IOC_GET_PROCESS_APERTURES_NEW, &ga) < 0 || ga.num_of_nodes != (uint32_t)n)
		die("GET_PROCESS_APERTURES_NEW");
	const char *kib = getenv("GPUJOB_BO_KIB");
	uint64_t vram = (kib ? strtoull(kib, NULL, 10) : 1024) << 10;
	for (int i = 0; i < n; i++) {
		struct kfd_ioctl_set_memory_policy_args mp = {.gpu_id = ids[i], .default_policy = KFD_IOC_CACHE_POLICY_COHERENT,
							     .alternate_policy = KFD_IOC_CACHE_POLICY_NONCOHERENT};
		if (kioctl(kfd, AMDKFD_IOC_SET_MEMORY_POLICY, &mp) < 0)
			die("SET_MEMORY_POLICY");
		uint32_t rw = KFD_IOC_ALLOC_MEM_FLAGS_WRITABLE;
		bos[nbos++] = (struct bo){alloc_bo(kfd, drm[i], ids[i], vram, KFD_IOC_ALLOC_MEM_FLAGS_VRAM | rw, NULL), vram, 0};
		bos[nbos++] = (struct bo){alloc_bo(kfd, drm[i], ids[i], 64 << 10, KFD_IOC_ALLOC_MEM_FLAGS_GTT | rw, NULL), 64 << 10, 0};
		void *mine = mmap(NULL, 64 << 10, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (mine == MAP_FAILED)
			die("mmap userptr memory");
		bos[nbos++] = (struct bo){alloc_bo(kfd, drm[i], ids[i], 64 << 10, KFD_IOC_ALLOC_MEM_FLAGS_USERPTR | rw, mine), 64 << 10, 0};
		alloc_bo(kfd, drm[i], ids[i], 8 << 10, KFD_IOC_ALLOC_MEM_FLAGS_DOORBELL | rw, NULL);
		struct kfd_ioctl_create_queue_args q = {0};
		q.ring_base_address = (uint64_t)(uintptr_t)bos[nbos - 2].cpu;
		q.ring_size = 4096;
		q.gpu_id = ids[i];
		q.queue_type = KFD_IOC_QUEUE_TYPE_COMPUTE_AQL;
		q.queue_percentage = 100;
		q.queue_priority = 7;
		if (kioctl(kfd, AMDKFD_IOC_CREATE_QUEUE, &q) < 0)
			die("CREATE_QUEUE");
	}
	struct kfd_ioctl_create_event_args e = {.event_type = KFD_IOC_EVENT_SIGNAL, .auto_reset = 1};
	if (kioctl(kfd, AMDKFD_IOC_CREATE_EVENT, &e) < 0)
		die("CREATE_EVENT");
	for (int i = 0; i < nbos; i++)
		bos[i].salt = (uint32_t)(i + 1) | (getpid() << 8);
}

static void work(const char *dir) {
	char path[512];
	snprintf(path, sizeof path, "%s/%s.log", dir, role);
	logfd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (logfd < 0)
		die("open log");
	for (uint64_t count = 1;; count++) {
		for (int b = 0; b < nbos; b++) {
			uint64_t n = bos[b].size / 8;
			volatile uint64_t *w = bos[b].cpu;
			if (count > 1)
				for (uint64_t i = 0; i < n; i++)
					if (w[i] != word(bos[b].salt, count - 1, i)) {
						dprintf(logfd, "BAD bo %d word %llu: %#llx, want %#llx (count %llu)\n", b, (unsigned long long)i,
							(unsigned long long)w[i], (unsigned long long)word(bos[b].salt, count - 1, i), (unsigned long long)count - 1);
						exit(4);
					}
			for (uint64_t i = 0; i < n; i++)
				w[i] = word(bos[b].salt, count, i);
		}
		dprintf(logfd, "%llu %s\n", (unsigned long long)count, role);
		if (count == 3) {
			snprintf(path, sizeof path, "%s/%s.ready", dir, role);
			close(open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
		}
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	if (argc > 2)
		setenv("GPUJOB_BO_KIB", argv[2], 1);
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		role = "child";
		setup();
		work(argv[1]);
	}
	setup();
	work(argv[1]);
}
