/*
 * yarastring: a process (comm "yarastring") holding known-bad strings in its memory, for signature
 * (YARA) scanning of process memory. The strings are stored XOR-encoded in the program and decoded at
 * start-up into the heap and into an anonymous mapping, as malware decrypts its configuration: they are in
 * the process's memory but not in its executable file. lab/attacks/README.md lists them exactly.
 *
 * Evidence: the decoded strings in the process's anonymous memory (heap and an anonymous mmap), at the
 * reported addresses; none of them in /attacks/bin/yarastring.
 */
#include "common.h"
#include <sys/mman.h>

#define KEY 0x5a

/* Each string XOR 0x5a, generated from yara-strings.txt by gen-yara.c (the README lists them). */
#include "yara-strings.h"

static volatile unsigned char key = KEY; /* volatile: the compiler must not decode at build time */

static char *decode(const unsigned char *enc, size_t len, char *out)
{
	size_t i;
	for (i = 0; i < len; i++)
		out[i] = (char)(enc[i] ^ key);
	out[len] = 0;
	return out;
}

static void body(int ready, void *arg)
{
	size_t i, total = 0, off = 0;
	char *heap, *anon;
	(void)arg;
	for (i = 0; i < YARA_COUNT; i++)
		total += YARA_LEN[i] + 1;
	heap = malloc(total);
	anon = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!heap || anon == MAP_FAILED)
		attack_body_fail(ready, "allocate");
	for (i = 0; i < YARA_COUNT; i++) {
		decode(YARA_ENC[i], YARA_LEN[i], heap + off);
		decode(YARA_ENC[i], YARA_LEN[i], anon + off);
		off += YARA_LEN[i] + 1;
	}
	/* The first string is the test marker: report where it lies, never the string itself (console text
	 * ends up in guest memory too, and must not be a second copy). */
	attack_ready(ready, "pid=%d strings=%zu heap=0x%lx anon=0x%lx marker_len=%zu", (int)getpid(),
		     (size_t)YARA_COUNT, (unsigned long)heap, (unsigned long)anon, YARA_LEN[0]);
	for (;;) {
		/* Touch the strings now and then, as a program using its configuration would. */
		volatile char c = heap[0] ^ anon[0];
		(void)c;
		sleep(60);
	}
}

int main(void)
{
	char line[512];
	pid_t pid = attack_spawn("yarastring", body, NULL, line, sizeof line);
	if (pid < 0)
		attack_fail("yara-string", "%s", line);
	printf("ATTACK yara-string %s\n", line);
	return 0;
}
