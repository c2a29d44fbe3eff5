/*
 * linger COMM                 a long-running idle process named COMM (the object a rootkit then hides or
 *                             unlinks); prints "pid=N".
 * linger --listen PORT COMM   the same, listening on 0.0.0.0:PORT and answering every connection with the
 *                             line "VIGIL-HIDDEN-PORT" (the port a rootkit then hides); prints "pid=N port=P".
 */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int port;

static void idle(int ready, void *arg)
{
	(void)arg;
	attack_ready(ready, "pid=%d", (int)getpid());
	attack_linger();
}

static void listener(int ready, void *arg)
{
	struct sockaddr_in sa;
	int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
	static const char banner[] = "VIGIL-HIDDEN-PORT\n";
	(void)arg;
	if (s < 0)
		attack_body_fail(ready, "socket");
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((unsigned short)port);
	if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(s, 8) < 0)
		attack_body_fail(ready, "listen on port %d", port);
	attack_ready(ready, "pid=%d port=%d", (int)getpid(), port);
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0) {
			if (errno != EINTR)
				sleep(1);
			continue;
		}
		if (write(c, banner, sizeof banner - 1) < 0) {
			/* the client left */
		}
		close(c);
	}
}

int main(int argc, char **argv)
{
	char line[512];
	const char *comm;
	attack_body body = idle;
	if (argc == 4 && strcmp(argv[1], "--listen") == 0) {
		port = atoi(argv[2]);
		if (port <= 0 || port > 65535) {
			fprintf(stderr, "linger: bad port %s\n", argv[2]);
			return 2;
		}
		body = listener;
		comm = argv[3];
	} else if (argc == 2) {
		comm = argv[1];
	} else {
		fprintf(stderr, "usage: linger COMM | linger --listen PORT COMM\n");
		return 2;
	}
	if (attack_spawn(comm, body, NULL, line, sizeof line) < 0) {
		printf("fail %s\n", line);
		return 1;
	}
	printf("%s\n", line);
	return 0;
}
