/*
 * patchtext: a running program whose own code is patched in memory, as in-memory loaders and cheats do.
 * Two functions, each on its own text page, are overwritten after start-up:
 *   auth_check   through mprotect(RWX) + memcpy, then mprotect back to R-X: "authentication bypass",
 *                it now always returns 1;
 *   step         through a write to /proc/self/mem (the mapping stays R-X): it now returns 0xdead.
 * The process (comm "patchtext") keeps calling both for ever.
 *
 * Evidence: the process's private text pages at the reported addresses differ from the same offsets of its
 * executable file (/attacks/bin/patchtext, non-PIE static: text at fixed addresses); those pages are
 * anonymous copies (COW), no longer the file's page-cache pages.
 */
#include "common.h"
#include <sys/mman.h>

#define PAGE 4096UL

/* noipa: callers must really call them (no inlining, no constant propagation of their results). */
__attribute__((noipa, aligned(4096))) int auth_check(int key)
{
	volatile int v = key;
	return v == 0x5eed ? 1 : 0;
}

__attribute__((noipa, aligned(4096))) long step(long c)
{
	volatile long v = c;
	return v + 1;
}

/* mov eax, 1; ret  and  mov eax, 0xdead; ret */
static const unsigned char PATCH_AUTH[] = {0xb8, 0x01, 0x00, 0x00, 0x00, 0xc3};
static const unsigned char PATCH_STEP[] = {0xb8, 0xad, 0xde, 0x00, 0x00, 0xc3};

static void body(int ready, void *arg)
{
	unsigned long a = (unsigned long)&auth_check, b = (unsigned long)&step;
	void *apage = (void *)(a & ~(PAGE - 1));
	int fd;
	(void)arg;
	if (auth_check(1) != 0 || step(1) != 2)
		attack_body_fail(ready, "unexpected results before patching");

	if (mprotect(apage, PAGE, PROT_READ | PROT_WRITE | PROT_EXEC) < 0)
		attack_body_fail(ready, "mprotect RWX");
	memcpy((void *)a, PATCH_AUTH, sizeof PATCH_AUTH);
	if (mprotect(apage, PAGE, PROT_READ | PROT_EXEC) < 0)
		attack_body_fail(ready, "mprotect R-X");

	fd = open("/proc/self/mem", O_RDWR);
	if (fd < 0)
		attack_body_fail(ready, "open /proc/self/mem");
	if (pwrite(fd, PATCH_STEP, sizeof PATCH_STEP, (off_t)b) != (ssize_t)sizeof PATCH_STEP)
		attack_body_fail(ready, "write /proc/self/mem");
	close(fd);

	if (auth_check(1) != 1 || step(1) != 0xdead)
		attack_body_fail(ready, "the patched code does not run");
	attack_ready(ready, "pid=%d exe=/attacks/bin/patchtext mprotect_addr=0x%lx procmem_addr=0x%lx len=%zu",
		     (int)getpid(), a, b, sizeof PATCH_AUTH);
	for (long n = 0;; n = step(n)) {
		if (auth_check((int)n) != 1)
			printf("auth_check lost its patch\n");
		sleep(1);
	}
}

int main(void)
{
	char line[512];
	pid_t pid = attack_spawn("patchtext", body, NULL, line, sizeof line);
	if (pid < 0)
		attack_fail("patch-text", "%s", line);
	printf("ATTACK patch-text %s\n", line);
	return 0;
}
