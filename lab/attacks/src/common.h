/*
 * Shared by the attack programs: the machine-readable result lines, and starting a long-running process
 * that detaches from the console (new session, stdio on /dev/null or a log) and tells its starter over a
 * pipe that it is in place, so the starter prints the result only once the attack really happened.
 *
 * Result lines (stdout of the starter, read by src/lab/attacks.ts):
 *   ATTACK <name> key=value ...        the attack is in place
 *   ATTACK-FAIL <name> <reason>        it is not (the starter exits 1)
 */
#ifndef VIGIL_ATTACK_COMMON_H
#define VIGIL_ATTACK_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Where long-running attack processes keep their logs and state files. */
#define ATTACK_STATE_DIR "/tmp/attacks"

static inline void attack_fail(const char *name, const char *fmt, ...)
{
	int err = errno;
	va_list ap;
	printf("ATTACK-FAIL %s ", name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	if (err)
		printf(": %s", strerror(err));
	printf("\n");
	fflush(stdout);
	exit(1);
}

/* Set the process name (comm, at most 15 bytes) that ps and /proc/PID/stat show. */
static inline void attack_set_comm(const char *comm)
{
	prctl(PR_SET_NAME, (unsigned long)comm, 0, 0, 0);
}

static inline void attack_state_dir(void)
{
	mkdir(ATTACK_STATE_DIR, 0755);
}

/*
 * Detach the calling (child) process: new session, stdin on /dev/null, stdout and stderr into
 * /tmp/attacks/<comm>.log, the name `comm`.
 */
static inline void attack_detach(const char *comm)
{
	char log[128];
	int fd;
	setsid();
	attack_state_dir();
	snprintf(log, sizeof log, ATTACK_STATE_DIR "/%s.log", comm);
	fd = open("/dev/null", O_RDONLY);
	if (fd >= 0) {
		dup2(fd, 0);
		if (fd > 0)
			close(fd);
	}
	fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	attack_set_comm(comm);
}

/*
 * Fork a detached process running body(readyfd, arg). The body writes one line to readyfd once the attack
 * is in place ("ok k=v ..." or "fail reason") and closes it; the starter gets that line (without "ok ") in
 * `line`. Returns the child's pid, or -1 with the reason in `line`.
 */
typedef void (*attack_body)(int readyfd, void *arg);

static inline pid_t attack_spawn(const char *comm, attack_body body, void *arg, char *line, size_t len)
{
	int p[2];
	pid_t pid;
	size_t n = 0;
	if (pipe(p) < 0) {
		snprintf(line, len, "pipe: %s", strerror(errno));
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		snprintf(line, len, "fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		close(p[0]);
		attack_detach(comm);
		body(p[1], arg);
		_exit(0);
	}
	close(p[1]);
	alarm(30); /* a body that never answers must not hang the console */
	while (n + 1 < len) {
		ssize_t r = read(p[0], line + n, len - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	alarm(0);
	close(p[0]);
	line[n] = 0;
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = 0;
	if (strncmp(line, "ok", 2) == 0) {
		size_t skip = line[2] == ' ' ? 3 : 2;
		memmove(line, line + skip, strlen(line + skip) + 1);
		return pid;
	}
	if (n == 0)
		snprintf(line, len, "process %d exited before it was ready", (int)pid);
	else if (strncmp(line, "fail ", 5) == 0)
		memmove(line, line + 5, strlen(line + 5) + 1);
	return -1;
}

/* For bodies: report readiness (printf-style, after "ok ") and close the pipe. */
static inline void attack_ready(int fd, const char *fmt, ...)
{
	char buf[512];
	int n;
	va_list ap;
	memcpy(buf, "ok ", 3);
	va_start(ap, fmt);
	n = vsnprintf(buf + 3, sizeof buf - 4, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if (n > (int)sizeof buf - 5)
		n = (int)sizeof buf - 5;
	buf[3 + n] = '\n';
	if (write(fd, buf, (size_t)n + 4) < 0) {
		/* the starter is gone: nobody to tell */
	}
	close(fd);
}

/* For bodies: report failure (with errno's text when set) and exit. */
static inline void attack_body_fail(int fd, const char *fmt, ...)
{
	char buf[512];
	int err = errno, n;
	va_list ap;
	memcpy(buf, "fail ", 5);
	va_start(ap, fmt);
	n = vsnprintf(buf + 5, sizeof buf - 5, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if (err && n < (int)sizeof buf - 80)
		n += snprintf(buf + 5 + n, sizeof buf - 5 - (size_t)n, ": %s", strerror(err));
	if (n > (int)sizeof buf - 7)
		n = (int)sizeof buf - 7;
	buf[5 + n] = '\n';
	if (write(fd, buf, (size_t)n + 6) < 0) {
		/* the starter is gone */
	}
	close(fd);
	_exit(1);
}

/* Sleep for ever (long-running attack processes end here). */
static inline void attack_linger(void)
{
	for (;;)
		pause();
}

#endif
