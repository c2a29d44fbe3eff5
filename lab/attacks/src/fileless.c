/*
 * fileless memfd     fileless execution: copy an ELF (this program) into an anonymous memfd
 *                    (memfd_create "vigil-payload") and run it from there with fexecve; the payload process
 *                    (comm "fileless") has no file on any file system: /proc/PID/exe is
 *                    "/memfd:vigil-payload (deleted)".
 * fileless deleted   drop a copy of this program to /tmp/.vigil-dropper, run it, delete the file; the
 *                    process (comm "deleted-exe") runs from an unlinked file: /proc/PID/exe is
 *                    "/tmp/.vigil-dropper (deleted)".
 *
 * Evidence: the process's mm->exe_file is a memfd (shmem inode, d_name "memfd:vigil-payload", i_nlink 0)
 * or a regular file with i_nlink 0 (unlinked); its executable VMAs map that file.
 */
#include "common.h"
#include <sys/mman.h>
#include <sys/syscall.h>

#define DROPPER "/tmp/.vigil-dropper"

static int copy_self(int out)
{
	char buf[65536];
	ssize_t n;
	int in = open("/proc/self/exe", O_RDONLY);
	if (in < 0)
		return -1;
	while ((n = read(in, buf, sizeof buf)) > 0)
		if (write(out, buf, (size_t)n) != n) {
			close(in);
			return -1;
		}
	close(in);
	return n < 0 ? -1 : 0;
}

/* argv: fileless --payload COMM READYFD */
static int payload(char **argv)
{
	int ready = atoi(argv[3]);
	attack_set_comm(argv[2]);
	attack_ready(ready, "pid=%d", (int)getpid());
	attack_linger();
	return 0;
}

/* Print the result line with the process's exe as the kernel reports it ("… (deleted)" as a flag). */
static int report(const char *name, pid_t pid, const char *extra)
{
	char link[64], exe[256];
	ssize_t n;
	size_t len;
	int deleted = 0;
	snprintf(link, sizeof link, "/proc/%d/exe", (int)pid);
	n = readlink(link, exe, sizeof exe - 1);
	if (n <= 0)
		attack_fail(name, "readlink %s", link);
	exe[n] = 0;
	len = strlen(exe);
	if (len > 10 && strcmp(exe + len - 10, " (deleted)") == 0) {
		exe[len - 10] = 0;
		deleted = 1;
	}
	if (!deleted) {
		errno = 0;
		attack_fail(name, "%s still has a file: %s", link, exe);
	}
	printf("ATTACK %s pid=%d exe=%s exe_deleted=1%s%s\n", name, (int)pid, exe, *extra ? " " : "", extra);
	return 0;
}

struct job {
	int memfd;
};

static void run_memfd(int ready, void *arg)
{
	const struct job *j = arg;
	char fdtext[16];
	char *args[] = {"fileless", "--payload", "fileless", fdtext, NULL};
	char *env[] = {"PATH=/usr/bin:/bin", NULL};
	snprintf(fdtext, sizeof fdtext, "%d", ready);
	fexecve(j->memfd, args, env);
	attack_body_fail(ready, "fexecve memfd");
}

static void run_dropped(int ready, void *arg)
{
	char fdtext[16];
	char *args[] = {"fileless", "--payload", "deleted-exe", fdtext, NULL};
	char *env[] = {"PATH=/usr/bin:/bin", NULL};
	(void)arg;
	snprintf(fdtext, sizeof fdtext, "%d", ready);
	execve(DROPPER, args, env);
	attack_body_fail(ready, "execve " DROPPER);
}

int main(int argc, char **argv)
{
	char line[512];
	struct job j;
	pid_t pid;
	if (argc == 4 && strcmp(argv[1], "--payload") == 0)
		return payload(argv);
	if (argc > 1 && strcmp(argv[1], "memfd") == 0) {
		/* Not close-on-exec: fexecve of a close-on-exec memfd works for ELF, but a clean fd is plainer. */
		j.memfd = (int)syscall(SYS_memfd_create, "vigil-payload", 0);
		if (j.memfd < 0)
			attack_fail("fileless", "memfd_create");
		if (copy_self(j.memfd) < 0)
			attack_fail("fileless", "copy into memfd");
		pid = attack_spawn("fileless", run_memfd, &j, line, sizeof line);
		if (pid < 0)
			attack_fail("fileless", "%s", line);
		close(j.memfd);
		return report("fileless", pid, "memfd=vigil-payload");
	}
	if (argc > 1 && strcmp(argv[1], "deleted") == 0) {
		int fd = open(DROPPER, O_WRONLY | O_CREAT | O_TRUNC, 0755);
		if (fd < 0 || copy_self(fd) < 0)
			attack_fail("fileless-deleted", "drop " DROPPER);
		close(fd);
		pid = attack_spawn("deleted-exe", run_dropped, NULL, line, sizeof line);
		if (pid < 0)
			attack_fail("fileless-deleted", "%s", line);
		if (unlink(DROPPER) < 0)
			attack_fail("fileless-deleted", "unlink " DROPPER);
		return report("fileless-deleted", pid, "");
	}
	fprintf(stderr, "usage: fileless memfd | fileless deleted\n");
	return 2;
}
