/*
 * ifattack promisc [IFACE]       put an interface into promiscuous mode (SIOCSIFFLAGS |= IFF_PROMISC), the
 *                                way a sniffer on a switched network does; it stays so after this exits.
 * ifattack macchange [IFACE] [MAC]  change an interface's MAC address (SIOCSIFHWADDR), the way an attacker
 *                                spoofs another host or evades MAC filtering.
 *
 * Evidence: promisc — IFF_PROMISC in the net_device's flags and gflags, promiscuity > 0, `ip link` shows
 * PROMISC, QEMU's rx-filter reports promiscuous; macchange — dev_addr differs from the NIC's permanent
 * address (perm_addr) and from the MAC QEMU gave the NIC.
 */
#include "common.h"
#include <net/if.h>
#include <net/if_arp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

/* "VIGIL" in a locally administered unicast address. */
#define DEFAULT_MAC "02:56:49:47:49:4c"

static void mac_text(const unsigned char *m, char *out)
{
	sprintf(out, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

static int promisc(const char *ifname)
{
	struct ifreq ifr;
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0)
		attack_fail("promisc", "socket");
	memset(&ifr, 0, sizeof ifr);
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		attack_fail("promisc", "SIOCGIFFLAGS %s", ifname);
	ifr.ifr_flags |= IFF_PROMISC;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		attack_fail("promisc", "SIOCSIFFLAGS %s", ifname);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0 || !(ifr.ifr_flags & IFF_PROMISC))
		attack_fail("promisc", "%s did not enter promiscuous mode", ifname);
	printf("ATTACK promisc iface=%s flags=0x%x\n", ifname, (unsigned)(unsigned short)ifr.ifr_flags);
	return 0;
}

static int macchange(const char *ifname, const char *mac)
{
	struct ifreq ifr;
	unsigned int b[6];
	char before[18], after[18];
	int i, s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0)
		attack_fail("macchange", "socket");
	if (sscanf(mac, "%2x:%2x:%2x:%2x:%2x:%2x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6 ||
	    (b[0] & 1)) {
		errno = 0;
		attack_fail("macchange", "bad unicast MAC address \"%s\"", mac);
	}
	memset(&ifr, 0, sizeof ifr);
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
	if (ioctl(s, SIOCGIFHWADDR, &ifr) < 0)
		attack_fail("macchange", "SIOCGIFHWADDR %s", ifname);
	mac_text((unsigned char *)ifr.ifr_hwaddr.sa_data, before);
	ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
	for (i = 0; i < 6; i++)
		ifr.ifr_hwaddr.sa_data[i] = (char)b[i];
	if (ioctl(s, SIOCSIFHWADDR, &ifr) < 0)
		attack_fail("macchange", "SIOCSIFHWADDR %s", ifname);
	if (ioctl(s, SIOCGIFHWADDR, &ifr) < 0)
		attack_fail("macchange", "SIOCGIFHWADDR %s", ifname);
	mac_text((unsigned char *)ifr.ifr_hwaddr.sa_data, after);
	printf("ATTACK macchange iface=%s old=%s new=%s\n", ifname, before, after);
	return 0;
}

int main(int argc, char **argv)
{
	const char *ifname = argc > 2 ? argv[2] : "eth0";
	if (argc > 1 && strcmp(argv[1], "promisc") == 0)
		return promisc(ifname);
	if (argc > 1 && strcmp(argv[1], "macchange") == 0)
		return macchange(ifname, argc > 3 ? argv[3] : DEFAULT_MAC);
	fprintf(stderr, "usage: ifattack promisc [IFACE] | macchange [IFACE] [MAC]\n");
	return 2;
}
