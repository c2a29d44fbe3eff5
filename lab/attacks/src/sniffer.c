/*
 * sniffer: a packet sniffer, the way tcpdump-like tools and credential sniffers start. A raw AF_PACKET
 * socket bound to no interface receives every frame of every interface (ETH_P_ALL); the process reads it in
 * a loop for ever and keeps a packet count in /tmp/attacks/sniffer.count.
 *
 * Evidence: a packet socket (AF_PACKET, SOCK_RAW, protocol 0x0003) in the process's file table, listed in
 * /proc/net/packet; a packet_type on the kernel's ptype_all list.
 */
#include "common.h"
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <sys/socket.h>

static void body(int ready, void *arg)
{
	unsigned char frame[65536];
	unsigned long count = 0;
	struct stat st;
	int cfd;
	int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	(void)arg;
	if (s < 0)
		attack_body_fail(ready, "socket(AF_PACKET, SOCK_RAW, ETH_P_ALL)");
	if (fstat(s, &st) < 0)
		attack_body_fail(ready, "fstat");
	cfd = open(ATTACK_STATE_DIR "/sniffer.count", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	attack_ready(ready, "pid=%d fd=%d inode=%lu proto=0x0003", (int)getpid(), s, (unsigned long)st.st_ino);
	for (;;) {
		char num[32];
		ssize_t n = recv(s, frame, sizeof frame, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			sleep(1);
			continue;
		}
		count++;
		if (cfd >= 0) {
			int len = snprintf(num, sizeof num, "%lu\n", count);
			if (pwrite(cfd, num, (size_t)len, 0) < 0) {
				/* only a statistic */
			}
		}
	}
}

int main(void)
{
	char line[512];
	pid_t pid = attack_spawn("sniffer", body, NULL, line, sizeof line);
	if (pid < 0)
		attack_fail("sniffer", "%s", line);
	printf("ATTACK sniffer %s\n", line);
	return 0;
}
