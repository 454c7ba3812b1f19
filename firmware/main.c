/* apwake soft-SoC demo: the BSP wakes every AP with INIT-SIPI-SIPI through its local APIC
   (Linux's wakeup_secondary_cpu_via_init order, lapic.md §6.3); each AP prints
   "AP <id> online" under the hardware lock and sets its bit in the LEDs. */
#include <stdint.h>
#include "soc.h"

#define REG(addr) (*(volatile uint32_t *)(addr))
#define APIC(name) REG(SOC_APIC_BASE + APIC_##name)

static volatile uint32_t online_mask;

static void putc_(char c) { REG(SOC_UART_TX) = (uint8_t)c; }
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
static void lock(void) { while (REG(SOC_LOCK_BASE)) { } }
static void unlock(void) { REG(SOC_LOCK_BASE) = 0; }

static void wait_icr_idle(void) { while (APIC(ICR) & ICR_DELIVERY_STATUS) { } }

static void send_ipi(uint32_t apic_id, uint32_t icr_low)
{
    wait_icr_idle();
    APIC(ICR_HI) = apic_id << 24;
    APIC(ICR) = icr_low;
    wait_icr_idle();
}

static void delay(uint32_t n) { for (volatile uint32_t i = 0; i < n; i++) { } }

void ap_main(void)
{
    uint32_t core = REG(SOC_CONTROL_BASE + SOC_CONTROL_CORE_ID);
    lock();
    puts_("AP ");
    putdec(REG(SOC_CONTROL_BASE + SOC_CONTROL_APIC_ID));
    puts_(" online\n");
    online_mask |= 1u << core;
    REG(SOC_LED_BASE) = online_mask;
    unlock();
}

void bsp_main(void)
{
    uint32_t n = REG(SOC_CONTROL_BASE + SOC_CONTROL_N_CORES);
    uint32_t self = REG(SOC_CONTROL_BASE + SOC_CONTROL_CORE_ID);
    lock();
    online_mask = 1u << self;
    REG(SOC_LED_BASE) = online_mask;
    puts_("apwake soc: BSP up, ");
    putdec(n);
    puts_(" cores\n");
    unlock();
    APIC(SVR) = SVR_APIC_ENABLE | 0xFF;
    for (uint32_t core = 0; core < n; core++) {
        if (core == self)
            continue;
        uint32_t id = SOC_APIC_ID(core);
        APIC(ESR) = 0;
        send_ipi(id, ICR_INIT | ICR_LEVEL_ASSERT | ICR_TRIGGER_LEVEL);
        send_ipi(id, ICR_INIT | ICR_TRIGGER_LEVEL);                    /* de-assert */
        for (int k = 0; k < 2; k++) {
            APIC(ESR) = 0;
            send_ipi(id, ICR_STARTUP | SOC_TRAMPOLINE_VECTOR);
            delay(10);
        }
        uint32_t spins = 0;
        while (!(online_mask & (1u << core)) && ++spins < 100000) { }
        if (!(online_mask & (1u << core))) {
            lock();
            puts_("AP core ");
            putdec(core);
            puts_(" did not come online\n");
            unlock();
        }
    }
    uint32_t count = 0;
    for (uint32_t core = 0; core < n; core++)
        count += (online_mask >> core) & 1;
    lock();
    puts_(count == n ? "all " : "only ");
    putdec(count);
    puts_(" of ");
    putdec(n);
    puts_(" cores online\n");
    unlock();
}
