/*
 * int80: makes one system call through the legacy interrupt gate (int $0x80, the 32-bit getpid, number
 * 20) and checks the answer: proof that IDT vector 0x80 still reaches the kernel after a rootkit hooked it.
 * Prints "INT80 ret=N pid=N" and exits 0 when they agree.
 */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	long ret;
	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory", "rcx", "r11", "r8", "r9", "r10");
	printf("INT80 ret=%ld pid=%d\n", ret, (int)getpid());
	return ret == getpid() ? 0 : 1;
}
