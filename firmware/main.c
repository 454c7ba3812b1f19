/* apwake soft-SoC demo.  SIPI start: the BSP wakes every AP with INIT-SIPI-SIPI through its
   local APIC (Linux's wakeup_secondary_cpu_via_init order, docs/spec/lapic.md §6.3).  Mailbox start (TDX
   style): the BSP wakes each AP through the ACPI MP wakeup mailbox (acpi_wakeup_cpu, docs/spec/mpwk.md
   §4), then offlines and onlines each AP (play_dead to ResetVector, Test, Wakeup), then
   "kexecs": kernel 1 parks every AP back in the firmware, kernel 2 wakes them all again.
   SEV-ES start (ghcb): the BSP negotiates the GHCB protocol through the MSR window, INIT-SIPI
   launches each AP, then each AP in turn parks in the MSR-form AP reset hold (docs/spec/ghcb.md §1: 0x006,
   VMGEXIT stalls the core) until the BSP's INIT-SIPI releases it with 0x007/data 1.
   Each AP prints "AP <id> online" under the hardware lock and sets its bit in the LEDs. */
#include <stdint.h>
#include "soc.h"

#define REG(addr) (*(volatile uint32_t *)(addr))
#define APIC(name) REG(SOC_APIC_BASE + APIC_##name)
#define CONTROL(name) REG(SOC_CONTROL_BASE + SOC_CONTROL_##name)
#define MAILBOX(field) REG(SOC_MAILBOX_BASE + MAILBOX_##field)
#define MSR(name) REG(SOC_MSR_BASE + SOC_MSR_##name)
#define IO(name) REG(SOC_IO_BASE + SOC_IO_##name)

static volatile uint32_t online_mask;
static volatile uint32_t offline_request;   /* bit per core: cpu_down asked it to play dead */
static volatile uint32_t kernel = 1;        /* which "kernel" runs (2 after the kexec) */

static void putc_(char c) { IO(UART_TX) = (uint8_t)c; }
static void puts_(const char *s) { while (*s) putc_(*s++); }
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

static void send_ipi(uint32_t apic_id, uint32_t icr_low)
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
    puts_(mailbox ? " cores (mailbox)\n" : start == SOC_AP_START_GHCB ? " cores (SEV-ES)\n" : " cores\n");
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
    int x2apic = 0;
    for (uint32_t core = 0; core < n; core++) {
        if (core == self)
            continue;
        uint32_t id = SOC_APIC_ID(core);
        if (x2apic) {                          /* the ICR is one 64-bit MSR, no busy bit */
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
        if (!x2apic && start == SOC_AP_START_SIPI && FIELD(CONTROL(FEATURES), SOC_CONTROL_FEATURES, MSR_WINDOW)) {
            /* after the first AP: the BSP switches its APIC to x2APIC mode (IA32_APIC_BASE
               EN | EXTD through the MSR window) and wakes the others through MSR 0x830 */
            wrmsr(MSR_IA32_APIC_BASE, rdmsr_lo(MSR_IA32_APIC_BASE) | APIC_BASE_X2APIC, MSR(DATA_HI));
            x2apic = 1;
            lock();
            puts_("BSP: x2APIC mode\n");
            unlock();
        }
    }
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
