/* apwake soft-SoC demo.  SIPI start: the BSP wakes every AP with INIT-SIPI-SIPI through its
   local APIC (Linux's wakeup_secondary_cpu_via_init order, docs/spec/lapic.md §6.3).  Mailbox start (TDX
   style): the BSP wakes each AP through the ACPI MP wakeup mailbox (acpi_wakeup_cpu, docs/spec/mpwk.md
   §4), then offlines and onlines each AP (play_dead to ResetVector, Test, Wakeup), then
   "kexecs": kernel 1 parks every AP back in the firmware, kernel 2 wakes them all again.
   SEV-ES start (ghcb): the BSP negotiates the GHCB protocol through the MSR window, INIT-SIPI
   launches each AP, then each AP in turn parks in the MSR-form AP reset hold (docs/spec/ghcb.md §1: 0x006,
   VMGEXIT stalls the core) until the BSP's INIT-SIPI releases it with 0x007/data 1.
   State-carrying start (context): the BSP goes paravirtual (a real-mode SIPI is refused), then
   starts each AP in an x86 state it writes in RAM, through the start-context unit: START (no
   INIT or SIPI) or SET_INITIAL_AP_STATE and INIT-SIPI-SIPI; the AP reports the pc and sp it got.
   Each AP prints "AP <id> online" under the hardware lock and sets its bit in the LEDs. */
#include <stdint.h>
#include "soc.h"

#define REG(addr) (*(volatile uint32_t *)(addr))
#define APIC(name) REG(SOC_APIC_BASE + APIC_##name)
#define CONTROL(name) REG(SOC_CONTROL_BASE + SOC_CONTROL_##name)
#define MAILBOX(field) REG(SOC_MAILBOX_BASE + MAILBOX_##field)
#define MSR(name) REG(SOC_MSR_BASE + SOC_MSR_##name)
#define IO(name) REG(SOC_IO_BASE + SOC_IO_##name)
#define START_REG(name) REG(SOC_START_BASE + SOC_START_##name)

static volatile uint32_t online_mask;
static volatile uint32_t offline_request;   /* bit per core: cpu_down asked it to play dead */
static volatile uint32_t kernel = 1;        /* which "kernel" runs (2 after the kexec) */

static void putc_(char c) { IO(UART_TX) = (uint8_t)c; }
/* NOINLINE: one copy, where -Os would copy the loop into every caller (the code below the
   trampoline page is full, link.ld) */
#define NOINLINE __attribute__((noinline))
static NOINLINE void puts_(const char *s) { while (*s) putc_(*s++); }
static void putdec(uint32_t v)
{
    /* RV32I has no divide: subtract powers of ten */
    static const uint32_t powers[] = {1000000000u, 100000000u, 10000000u, 1000000u, 100000u,
                                      10000u, 1000u, 100u, 10u, 1u};
    int started = 0;
    for (unsigned k = 0; k < sizeof powers / sizeof powers[0]; k++) {
        char digit = '0';
        while (v >= powers[k]) { v -= powers[k]; digit++; }
        if (digit != '0' || started || powers[k] == 1) { putc_(digit); started = 1; }
    }
}
static void lock(void) { while (IO(LOCK)) { } }
static void unlock(void) { IO(LOCK) = 0; }

static void wait_icr_idle(void) { while (APIC(ICR) & ICR_DELIVERY_STATUS) { } }

static NOINLINE void send_ipi(uint32_t apic_id, uint32_t icr_low)
{
    wait_icr_idle();
    APIC(ICR_HI) = apic_id << 24;
    APIC(ICR) = icr_low;
    wait_icr_idle();
}

static void delay(uint32_t n) { for (volatile uint32_t i = 0; i < n; i++) { } }

/* RDMSR / WRMSR through the SoC's MSR window (RV32 has no such instructions) */
static uint32_t rdmsr_lo(uint32_t msr) { MSR(SELECT) = msr; return MSR(DATA_LO); }
static void wrmsr(uint32_t msr, uint32_t lo, uint32_t hi)
{
    MSR(SELECT) = msr;
    MSR(DATA_LO) = lo;
    MSR(DATA_HI) = hi;                         /* this store does the WRMSR */
}

/* WRMSR GHCB, VMGEXIT (the store completes when the hypervisor resumes this vCPU), RDMSR:
   the low word of the reply (the high word is then in DATA_HI) */
static uint32_t ghcb_call(uint32_t request)
{
    wrmsr(MSR_GHCB, request, 0);
    MSR(VMGEXIT) = 1;
    return rdmsr_lo(MSR_GHCB);
}

#define FIELD(value, layout, name) (((value) >> layout##_##name##_SHIFT) & layout##_##name##_MASK)

static void say(const char *what, uint32_t apic_id)
{
    if (kernel == 2)
        puts_("kernel 2: ");
    puts_("AP ");
    putdec(apic_id);
    puts_(what);
}

/* say it under the lock and update this AP's bit in the online mask and the LEDs */
static void announce(uint32_t bit, int online, const char *what)
{
    lock();
    say(what, CONTROL(APIC_ID));
    if (online) {
        online_mask |= bit;
    } else {
        online_mask &= ~bit;
        offline_request &= ~bit;
    }
    IO(LEDS) = online_mask;
    unlock();
}

void ap_main(void)
{
    uint32_t bit = 1u << CONTROL(CORE_ID), start = CONTROL(AP_START);
    announce(bit, 1, " online\n");
    if (start == SOC_AP_START_SIPI)
        return;
    while (!(offline_request & bit)) { }       /* idle until cpu_down */
    if (start == SOC_AP_START_MAILBOX) {
        announce(bit, 0, " offline\n");
        CONTROL(RESET_VECTOR) = 1;             /* acpi_mp_play_dead: jmp ResetVector */
        for (;;) { }
    }
    announce(bit, 0, " offline: AP reset hold\n");
    uint32_t reply;
    do {                                       /* the MSR-form hold: retry unless woken */
        reply = ghcb_call(GHCB_AP_RESET_HOLD_REQ);
    } while (FIELD(reply, MSR_GHCB, INFO) != GHCB_AP_RESET_HOLD_RESP
             || !(FIELD(reply, MSR_GHCB, DATA) | MSR(DATA_HI)));
    announce(bit, 1, " woken from reset hold\n");
    for (;;) { }
}

/* acpi_wakeup_cpu / the Test command: ApicId, WakeupVector, then Command; spin until 0 */
static int mailbox_command(uint32_t apic_id, uint32_t command)
{
    MAILBOX(APIC_ID) = apic_id;
    MAILBOX(WAKEUP_VECTOR) = SOC_TRAMPOLINE_VECTOR << 12;
    REG(SOC_MAILBOX_BASE + MAILBOX_WAKEUP_VECTOR + 4) = 0;
    MAILBOX(COMMAND) = command;
    for (uint32_t spins = 0; spins < 100000; spins++)
        if (!(FIELD(MAILBOX(COMMAND), MAILBOX_COMMAND, COMMAND)))
            return 1;
    return 0;
}

static int wait_mask(uint32_t bit, uint32_t want)
{
    for (uint32_t spins = 0; spins < 100000; spins++)
        if ((online_mask & bit) == want)
            return 1;
    return 0;
}

static void report(const char *what, uint32_t core)
{
    lock();
    puts_(what);
    putdec(core);
    puts_("\n");
    unlock();
}

static void summary(uint32_t n)
{
    uint32_t count = 0;
    for (uint32_t core = 0; core < n; core++)
        count += (online_mask >> core) & 1;
    lock();
    if (kernel == 2)
        puts_("kernel 2: ");
    puts_(count == n ? "all " : "only ");
    putdec(count);
    puts_(" of ");
    putdec(n);
    puts_(" cores online\n");
    unlock();
}

static void wake_all_by_mailbox(uint32_t n, uint32_t self)
{
    for (uint32_t core = 0; core < n; core++) {
        if (core == self)
            continue;
        if (!mailbox_command(SOC_APIC_ID(core), MAILBOX_CMD_WAKEUP) || !wait_mask(1u << core, 1u << core))
            report("mailbox: AP core did not come online: ", core);
    }
}

static void cpu_down(uint32_t core)
{
    offline_request |= 1u << core;
    if (!wait_mask(1u << core, 0))
        report("cpu_down: core did not go offline: ", core);
    else if (!mailbox_command(SOC_APIC_ID(core), MAILBOX_CMD_TEST))
        report("Failed to hand over CPU to BIOS: core ", core);
}

/* ---- state-carrying start (ap_start="context", docs/ARCHITECTURE.md "Start-context unit") ------
   The start-context unit starts an AP in the x86 protected-mode state of a struct vmi_ap_state
   the BSP writes in RAM (the unit reads it, and the GDT, over the shared bus).  On these RISC-V
   cores only EIP (where the AP starts: the boot stub jumps there) and ESP (its stack) mean
   anything, but the unit checks the whole state, so the BSP builds a valid one: CR0.PE, a flat
   GDT of the AP's own with a code and a data segment (CS 0x08, SS = DS = ES 0x10, RPL 0; FS, GS
   null), LDTR 0.  The AP's own RAM is the stack block the SoC keeps for it at the top of RAM
   (CONTROL RAM_BYTES, STACK_BYTES): its GDT at the top, its stack below.  Even cores are
   started by START (Xen VCPUOP_up, Hyper-V HvCallStartVirtualProcessor: "start this CPU with
   this EIP and this stack", no INIT or SIPI), odd ones the VMI way: SET_INITIAL_AP_STATE, then
   bsp_main's INIT-SIPI-SIPI (the second SIPI finds the AP running and is dropped).  The
   functions marked HIGH_TEXT live after the trampoline page (link.ld). */
#define HIGH_TEXT __attribute__((section(".text_high"))) NOINLINE   /* inlined, it would not move */

struct vmi_ap_state {                          /* Linux arch/x86/include/asm/vmi.h, i386 */
    uint32_t cr0, cr2, cr3, cr4;
    uint32_t efer_lo, efer_hi;                 /* a u64, 4-byte aligned on i386 (8 on RV32) */
    uint32_t eip, eflags, eax, ebx, ecx, edx, esp, ebp, esi, edi;
    uint16_t cs, ss, ds, es, fs, gs, ldtr, gdtr_limit;
    uint32_t gdtr_base, idtr_base;
    uint16_t idtr_limit;
};
#define AT(field, NAME) _Static_assert(__builtin_offsetof(struct vmi_ap_state, field) == VMI_AP_STATE_##NAME, \
                                       "struct vmi_ap_state: " #field " is not where the unit reads it")
AT(cr0, CR0); AT(cr2, CR2); AT(cr3, CR3); AT(cr4, CR4); AT(efer_lo, EFER); AT(eip, EIP);
AT(eflags, EFLAGS); AT(eax, EAX); AT(ebx, EBX); AT(ecx, ECX); AT(edx, EDX); AT(esp, ESP);
AT(ebp, EBP); AT(esi, ESI); AT(edi, EDI); AT(cs, CS); AT(ss, SS); AT(ds, DS); AT(es, ES);
AT(fs, FS); AT(gs, GS); AT(ldtr, LDTR); AT(gdtr_limit, GDTR_LIMIT); AT(gdtr_base, GDTR_BASE);
AT(idtr_base, IDTR_BASE); AT(idtr_limit, IDTR_LIMIT);
_Static_assert(sizeof(struct vmi_ap_state) == VMI_AP_STATE_SIZE, "struct vmi_ap_state: size");

enum { GDT_CODE = 1, GDT_DATA = 2, GDT_ENTRIES = 3 };  /* entry 0 is the null descriptor */
#define SELECTOR(index) ((index) << 3)         /* TI 0 (the GDT), RPL 0 */
#define SEG_CODE_XR 0xA                        /* descriptor types (SDM vol. 3 table 3-1) */
#define SEG_DATA_RW 0x2
#define DESC(name, value) ((uint64_t)((value) & GDT_DESC_##name##_MASK) << GDT_DESC_##name##_SHIFT)
#define FLAT(type) (DESC(LIMIT_LO, 0xFFFF) | DESC(TYPE, type) | DESC(S, 1) | DESC(P, 1) \
                    | DESC(LIMIT_HI, 0xF) | DESC(DB, 1) | DESC(G, 1))   /* base 0, 4 GiB, DPL 0, 32-bit */

static struct vmi_ap_state ap_state;           /* one, as vmi_startup_ipi_hook's: read during the call */

void ap_context_entry(void);                   /* crt0.S: calls ap_context_main(its pc, its sp) */

static NOINLINE void puthex(uint32_t v)
{
    puts_(" 0x");
    for (int shift = 28; shift >= 0; shift -= 4)
        putc_("0123456789abcdef"[(v >> shift) & 0xF]);
}

#ifdef APWAKE_PROBE_BUS_ERROR
/* The SoC tests' negative case (build_firmware(probe_bus_error=True)), called by crt0.S when
   bsp_main returns, so that the image below the trampoline page is the same as without it: after
   an INIT-SIPI run, a load from SOC_UNDECODED_BASE, a window no SoC decodes (rtl/soc/memory_map.py
   UNDECODED_BASE), reads 0 and sets the BSP's sticky bus_error (rtl/soc/interconnect.py). */
HIGH_TEXT void probe_bus_error(void)
{
    if (CONTROL(AP_START) != SOC_AP_START_SIPI)
        return;
    uint32_t value = *(volatile uint32_t *)SOC_UNDECODED_BASE;
    lock();
    puts_("bus error probe: read");
    puthex(value);
    puts_(", probe done\n");
    unlock();
}
#endif

/* an AP started in a context: its pc and sp, as ap_context_entry found them */
HIGH_TEXT void ap_context_main(uint32_t pc, uint32_t sp)
{
    uint32_t bit = 1u << CONTROL(CORE_ID);
    lock();
    say(": started by context at", CONTROL(APIC_ID));
    puthex(pc);
    puts_(" sp");
    puthex(sp);
    puts_("\n");
    online_mask |= bit;
    IO(LEDS) = online_mask;
    unlock();
}

/* one call: the arguments, the op (the store starts it), then wait until it is done; the line
   "context: <what>[AP <id> eip 0x... esp 0x...]: OK" (a refusal: its status and field) */
static NOINLINE void start_call(const char *what, uint32_t op, uint32_t apic_id)
{
    __asm__ volatile("" ::: "memory");         /* ap_state and the GDT are in RAM before the call */
    START_REG(CALL_ADDRESS) = (uint32_t)&ap_state;
    START_REG(CALL_APIC_ID) = apic_id;
    START_REG(CALL_OP) = op;
    uint32_t status;
    do
        status = START_REG(CALL_STATUS);
    while (FIELD(status, SOC_START_CALL_STATUS, BUSY));
    lock();
    puts_("context: ");
    puts_(what);
    if (op != START_OP_PARAVIRT) {
        say(" eip", apic_id);
        puthex(ap_state.eip);
        puts_(" esp");
        puthex(ap_state.esp);
    }
    if (FIELD(status, SOC_START_CALL_STATUS, STATUS) == START_STATUS_OK) {
        puts_(": OK\n");
    } else {
        puts_(": refused, status ");
        putdec(FIELD(status, SOC_START_CALL_STATUS, STATUS));
        puts_(" field ");
        putdec(FIELD(status, SOC_START_CALL_STATUS, FIELD));
        puts_("\n");
    }
    unlock();
}

/* VMI's constraint: the BSP is paravirtual, so an AP's real-mode INIT-SIPI is refused */
static HIGH_TEXT void go_paravirtual(uint32_t apic_id)
{
    start_call("PARAVIRT", START_OP_PARAVIRT, 0);
    send_ipi(apic_id, ICR_INIT | ICR_LEVEL_ASSERT | ICR_TRIGGER_LEVEL);
    send_ipi(apic_id, ICR_INIT | ICR_TRIGGER_LEVEL);
    send_ipi(apic_id, ICR_STARTUP | SOC_TRAMPOLINE_VECTOR);
    uint32_t refused = 0;
    for (uint32_t spins = 0; spins < 1000 && !refused; spins++)
        refused = FIELD(START_REG(LAUNCHES), SOC_START_LAUNCHES, REFUSED);
    lock();
    puts_("context: INIT-SIPI without a context to ");
    say(refused ? ": refused\n" : ": not refused!\n", apic_id);
    unlock();
}

/* the AP's state; START (returns 1: started, no INIT or SIPI) or SET_INITIAL_AP_STATE (0) */
static HIGH_TEXT int start_by_context(uint32_t core, uint32_t apic_id)
{
    uint32_t top = SOC_RAM_BASE + CONTROL(RAM_BYTES);
    for (uint32_t k = 0; k < core; k++)        /* RV32I has no multiply */
        top -= CONTROL(STACK_BYTES);
    uint64_t *gdt = (uint64_t *)((top - GDT_ENTRIES * 8) & ~7u);
    gdt[0] = 0;
    gdt[GDT_CODE] = FLAT(SEG_CODE_XR);
    gdt[GDT_DATA] = FLAT(SEG_DATA_RW);
    ap_state.cr0 = X86_CR0_PE;
    ap_state.eip = (uint32_t)ap_context_entry;
    ap_state.esp = (uint32_t)gdt & ~15u;       /* the ABI's 16-byte alignment */
    ap_state.cs = SELECTOR(GDT_CODE);
    ap_state.ss = ap_state.ds = ap_state.es = SELECTOR(GDT_DATA);
    ap_state.gdtr_limit = GDT_ENTRIES * 8 - 1;
    ap_state.gdtr_base = (uint32_t)gdt;
    if (core & 1) {
        start_call("SET_INITIAL_AP_STATE ", START_OP_SET_INITIAL_AP_STATE, apic_id);
        return 0;
    }
    start_call("START ", START_OP_START, apic_id);
    return 1;
}

static HIGH_TEXT void say_launches(void)
{
    static const char *const kinds[] = {" real-mode, ", " context, ", " refused, ", " dropped\n"};
    uint32_t counts = START_REG(LAUNCHES);
    lock();
    puts_("context: launches ");
    for (int k = 0; k < 4; k++, counts >>= 8) {
        putdec(counts & 0xFF);
        puts_(kinds[k]);
    }
    unlock();
}

void bsp_main(void)
{
    uint32_t n = CONTROL(N_CORES), self = CONTROL(CORE_ID);
    uint32_t start = CONTROL(AP_START);
    int mailbox = start == SOC_AP_START_MAILBOX;
    lock();
    online_mask = 1u << self;
    IO(LEDS) = online_mask;
    puts_("apwake soc: BSP up, ");
    putdec(n);
    puts_(mailbox ? " cores (mailbox)\n" : start == SOC_AP_START_GHCB ? " cores (SEV-ES)\n"
          : start == SOC_AP_START_CONTEXT ? " cores (context)\n" : " cores\n");
    volatile uint32_t *rom = (volatile uint32_t *)SOC_AP_BOOT;   /* the boot ROM ignores stores */
    uint32_t word = *rom;
    *rom = ~word;
    if (*rom != word)
        puts_("boot ROM is writable\n");
    unlock();
    if (start == SOC_AP_START_GHCB) {                       /* sev_es_negotiate_protocol */
        uint32_t lo = ghcb_call(GHCB_SEV_INFO_REQ);
        uint64_t info = (uint64_t)MSR(DATA_HI) << 32 | lo;
        lock();
        if (FIELD(info, SEV_INFO, INFO) != GHCB_SEV_INFO_RESP) {
            puts_("GHCB: no SEV information\n");
        } else {
            puts_("GHCB protocol ");
            putdec(FIELD(info, SEV_INFO, MIN_VERSION));
            puts_("-");
            putdec(FIELD(info, SEV_INFO, MAX_VERSION));
            puts_(", C-bit ");
            putdec(FIELD(info, SEV_INFO, CBIT));
            puts_("\n");
        }
        unlock();
    }
    if (mailbox) {
        wake_all_by_mailbox(n, self);
        summary(n);
        for (uint32_t core = 0; core < n; core++) {          /* offline / online */
            if (core == self)
                continue;
            cpu_down(core);
            if (!mailbox_command(SOC_APIC_ID(core), MAILBOX_CMD_WAKEUP) || !wait_mask(1u << core, 1u << core))
                report("cpu_up: core did not come online: ", core);
        }
        summary(n);
        for (uint32_t core = 0; core < n; core++)            /* kexec: park every AP */
            if (core != self)
                cpu_down(core);
        kernel = 2;
        lock();
        puts_("kexec: kernel 2\n");
        unlock();
        wake_all_by_mailbox(n, self);
        summary(n);
        return;
    }
    APIC(SVR) = SVR_APIC_ENABLE | SPURIOUS_VECTOR;
    int context = start == SOC_AP_START_CONTEXT;
    if (context && n > 1)
        go_paravirtual(SOC_APIC_ID(self == 0));
    int x2apic = 0;
    for (uint32_t core = 0; core < n; core++) {
        if (core == self)
            continue;
        uint32_t id = SOC_APIC_ID(core);
        if (context && start_by_context(core, id)) {
            /* started by START: no INIT, no SIPI */
        } else if (x2apic) {                   /* the ICR is one 64-bit MSR, no busy bit */
            wrmsr(MSR_X2APIC_ESR, 0, 0);
            wrmsr(MSR_X2APIC_ICR, ICR_INIT | ICR_LEVEL_ASSERT | ICR_TRIGGER_LEVEL, id);
            wrmsr(MSR_X2APIC_ICR, ICR_INIT | ICR_TRIGGER_LEVEL, id);
            for (int k = 0; k < 2; k++) {
                wrmsr(MSR_X2APIC_ICR, ICR_STARTUP | SOC_TRAMPOLINE_VECTOR, id);
                delay(10);
            }
        } else {
            APIC(ESR) = 0;
            send_ipi(id, ICR_INIT | ICR_LEVEL_ASSERT | ICR_TRIGGER_LEVEL);
            send_ipi(id, ICR_INIT | ICR_TRIGGER_LEVEL);                /* de-assert */
            for (int k = 0; k < 2; k++) {
                APIC(ESR) = 0;
                send_ipi(id, ICR_STARTUP | SOC_TRAMPOLINE_VECTOR);
                delay(10);
            }
        }
        if (!wait_mask(1u << core, 1u << core))
            report("AP core did not come online: ", core);
        if (!x2apic && start == SOC_AP_START_SIPI && FIELD(CONTROL(FEATURES), SOC_CONTROL_FEATURES, MSR_WINDOW)
            && FIELD(CONTROL(FEATURES), SOC_CONTROL_FEATURES, X2APIC)) {
            /* after the first AP: the BSP switches its APIC to x2APIC mode (IA32_APIC_BASE
               EN | EXTD through the MSR window) and wakes the others through MSR 0x830 */
            wrmsr(MSR_IA32_APIC_BASE, rdmsr_lo(MSR_IA32_APIC_BASE) | APIC_BASE_X2APIC, MSR(DATA_HI));
            x2apic = 1;
            lock();
            puts_("BSP: x2APIC mode\n");
            unlock();
        }
    }
    if (context)
        say_launches();
    summary(n);
    if (start != SOC_AP_START_GHCB)
        return;
    for (uint32_t core = 0; core < n; core++) {             /* reset hold and release */
        if (core == self)
            continue;
        uint32_t id = SOC_APIC_ID(core);
        offline_request |= 1u << core;
        if (!wait_mask(1u << core, 0))
            report("cpu_down: core did not go offline: ", core);
        delay(200);                                         /* let it reach the hold */
        send_ipi(id, ICR_INIT | ICR_LEVEL_ASSERT | ICR_TRIGGER_LEVEL);
        send_ipi(id, ICR_INIT | ICR_TRIGGER_LEVEL);
        send_ipi(id, ICR_STARTUP | SOC_TRAMPOLINE_VECTOR);
        send_ipi(id, ICR_STARTUP | SOC_TRAMPOLINE_VECTOR);
        if (!wait_mask(1u << core, 1u << core))
            report("cpu_up: core did not wake from reset hold: ", core);
    }
    summary(n);
}
