/*
 * Build-time helper (runs on the build host): turns yara-strings.txt, one string a line, into
 * yara-strings.h, each string XOR 0x5a, so that the attack binary does not hold them in clear.
 */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
	char line[1024];
	size_t count = 0, lens[64];
	FILE *in, *out;
	if (argc != 3)
		return 2;
	in = fopen(argv[1], "r");
	out = fopen(argv[2], "w");
	if (!in || !out)
		return 1;
	fprintf(out, "/* generated from yara-strings.txt by gen-yara.c: do not edit */\n");
	while (fgets(line, sizeof line, in) && count < 64) {
		size_t i, len = strcspn(line, "\r\n");
		if (len == 0)
			continue;
		fprintf(out, "static const unsigned char YARA_%zu[] = {", count);
		for (i = 0; i < len; i++)
			fprintf(out, "%s0x%02x", i ? "," : "", (unsigned char)line[i] ^ 0x5a);
		fprintf(out, "};\n");
		lens[count++] = len;
	}
	fprintf(out, "#define YARA_COUNT %zu\nstatic const unsigned char *const YARA_ENC[] = {", count);
	for (size_t i = 0; i < count; i++)
		fprintf(out, "%sYARA_%zu", i ? "," : "", i);
	fprintf(out, "};\nstatic const size_t YARA_LEN[] = {");
	for (size_t i = 0; i < count; i++)
		fprintf(out, "%s%zu", i ? "," : "", lens[i]);
	fprintf(out, "};\n");
	return fclose(out) == 0 && fclose(in) == 0 ? 0 : 1;
}
