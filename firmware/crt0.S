/* Entry points.  Every core's stack pointer is set by the SoC at reset (PicoRV32 STACKADDR); a
   state-carrying start (ap_start="context") gives an AP another one, START_SP. */
#include "soc.h"

    .section .boot.start, "ax"
    .globl _start
_start:                         /* the BSP, from reset: clear .bss, then C */
    la t0, __bss_start
    la t1, __bss_end
1:  bgeu t0, t1, 2f
    sw zero, 0(t0)
    addi t0, t0, 4
    j 1b
2:  call bsp_main
3:  j 3b

    .section .boot.ap, "ax"
    .globl ap_boot
ap_boot:                        /* an AP released: the stack its start gave it (START_SP; 0: keep
                                   STACKADDR's), then go where it was started: START_ADDR, vector
                                   << 12 for a SIPI, the carried EIP for a context */
    li t0, SOC_CONTROL_BASE
    lw t1, SOC_CONTROL_START_SP(t0)
    beqz t1, 1f
    mv sp, t1
1:  lw t1, SOC_CONTROL_START_ADDR(t0)
    jr t1

    .section .boot.trampoline, "ax"
    .globl trampoline
trampoline:                     /* the SIPI vector 0x01 page: into C */
    call ap_main
1:  j 1b

    .section .text_high, "ax"
    .globl ap_context_entry
ap_context_entry:               /* the EIP of a carried context: report the pc and sp this AP was given */
    auipc a0, 0
    mv a1, sp
    call ap_context_main
1:  j 1b
