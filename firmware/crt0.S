/* Entry points.  Each core sets its own stack pointer from its control window (RAM_BYTES,
   CORE_ID, STACK_BYTES), since no core sets sp at reset (SERV keeps its register file in a RAM
   that reset does not clear; the SoC leaves PicoRV32's STACKADDR unset, so that its cores are
   one module with one set of parameters); a
   state-carrying start (ap_start="context") gives an AP another one, START_SP. */
#include "soc.h"

    .section .boot.start, "ax"
    .globl _start
_start:                         /* the BSP, from reset: its stack, clear .bss, then C */
    call reset_stack
    la t0, __bss_start
    la t1, __bss_end
1:  bgeu t0, t1, 2f
    sw zero, 0(t0)
    addi t0, t0, 4
    j 1b
2:  call bsp_main
#ifdef APWAKE_PROBE_BUS_ERROR
    call probe_bus_error        /* the SoC tests' negative case (firmware/main.c) */
#endif
3:  j 3b

    .section .boot.ap, "ax"
    .globl ap_boot
ap_boot:                        /* an AP released: the stack its start gave it (START_SP; 0: its
                                   reset stack), then go where it was started: START_ADDR, vector
                                   << 12 for a SIPI, the carried EIP for a context */
    li t0, SOC_CONTROL_BASE
    lw sp, SOC_CONTROL_START_SP(t0)
    bnez sp, 1f
    call reset_stack
1:  li t0, SOC_CONTROL_BASE
    lw t1, SOC_CONTROL_START_ADDR(t0)
    jr t1

    .section .boot.trampoline, "ax"
    .globl trampoline
trampoline:                     /* the SIPI vector 0x01 page: into C */
    call ap_main
1:  j 1b

    .section .text_high, "ax"
    .globl reset_stack
reset_stack:                    /* sp = RAM_BASE + RAM_BYTES - CORE_ID * STACK_BYTES (the control
                                   window's STACK_BYTES; RV32I has no multiply); uses t0-t2 */
    li t0, SOC_CONTROL_BASE
    lw sp, SOC_CONTROL_RAM_BYTES(t0)
    lw t1, SOC_CONTROL_CORE_ID(t0)
    lw t2, SOC_CONTROL_STACK_BYTES(t0)
    li t0, SOC_RAM_BASE
    add sp, sp, t0
1:  beqz t1, 2f
    sub sp, sp, t2
    addi t1, t1, -1
    j 1b
2:  ret

    .globl ap_context_entry
ap_context_entry:               /* the EIP of a carried context: report the pc and sp this AP was given */
    auipc a0, 0
    mv a1, sp
    call ap_context_main
1:  j 1b
