/*
 * context_x86_64_sysv.S - context switch for x86-64, System V ABI.
 *
 * Frame saved on the stack being left (lowest address first):
 *
 *    0  MXCSR (4 bytes)          SSE control and status
 *    4  x87 control word (2)     x87 precision and rounding
 *    8  r15
 *   16  r14
 *   24  r13                      fresh context: argument for the shim
 *   32  r12                      fresh context: address of the shim
 *   40  rbx
 *   48  rbp
 *   56  return address           fresh context: the trampoline
 *
 * The FP control state is part of each context, but reloading it costs a
 * serializing instruction (ldmxcsr is ~40 ns on the machines we measured), so
 * it is reloaded only when the control bits differ. MXCSR bits 0-5 are
 * sticky exception flags: a context that merely raised "inexact" must not
 * make every later switch pay for a reload, so they are left out of the
 * comparison (mask 0xffc0).
 *
 * ASYNCJOB_EXPERIMENT_NO_FP_CONTROL (set only by a benchmark-only build of
 * the library, never by the library's own build) leaves the FP control state
 * out: the switch then neither stores nor compares nor reloads it, as
 * libcrypto's setjmp/longjmp switch does not. It exists to measure what
 * keeping that state per context costs (docs/benchmarks.md).
 *
 * The switch ends in `pop; jmp *reg` rather than `ret`: the return to a call
 * site on another stack would always miss in the return-stack predictor.
 * Consequences for CET: the jump lands on ordinary call sites, which carry no
 * ENDBR64, and the shadow stack is not switched. This file therefore claims
 * neither IBT nor SHSTK (it has no .note.gnu.property): a program linking it
 * runs without CET enforcement, which is the truth about what it supports.
 * ENDBR64 is still placed at the entry points, so that a later IBT-aware
 * version only has to change the jumps.
 */

#if defined(__x86_64__) && defined(__ELF__)

#if defined(__CET__)
#define ENDBR endbr64
#else
#define ENDBR
#endif

/* Offsets in the saved frame (the layout above), from the saved stack
 * pointer. */
#define FRAME_MXCSR      0      /* SSE control and status word, 4 bytes */
#define FRAME_X87CW      4      /* x87 control word, 2 bytes */
#define FRAME_FP_CONTROL 8      /* size of the FP control slot, pushed last */
#define FRAME_R15        8
#define FRAME_R14       16
#define FRAME_R13       24      /* fresh context: argument for the shim */
#define FRAME_R12       32      /* fresh context: address of the shim */
#define FRAME_RBX       40
#define FRAME_RBP       48
#define FRAME_RETURN    56      /* return address; fresh context: trampoline */
#define FRAME_SIZE      64

/* Offsets in the record a diverted context receives as its transfer value
 * (see asyncjob_context_diverted). */
#define DIVERT_RETURN    0      /* return address of the switch's call */
#define DIVERT_FUNCTION  8      /* function to run there */
#define DIVERT_ARGUMENT 16      /* its argument */

        .text

/* void *asyncjob_context_switch(void **save_sp, void *load_sp, void *transfer)
 *   rdi = where to store this context's stack pointer
 *   rsi = stack pointer of the context to resume
 *   rdx = value handed to the resumed context (its return value) */
        .globl  asyncjob_context_switch
        .hidden asyncjob_context_switch
        .type   asyncjob_context_switch, @function
        .p2align 4
asyncjob_context_switch:
        .cfi_startproc
        ENDBR
        pushq   %rbp                    /* callee-saved: frame pointer */
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %rbp, 0
        pushq   %rbx                    /* callee-saved */
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %rbx, 0
        pushq   %r12                    /* callee-saved */
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r12, 0
        pushq   %r13                    /* callee-saved */
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r13, 0
        pushq   %r14                    /* callee-saved */
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r14, 0
        pushq   %r15                    /* callee-saved */
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r15, 0
        leaq    -FRAME_FP_CONTROL(%rsp), %rsp /* room for the FP control state */
        .cfi_adjust_cfa_offset FRAME_FP_CONTROL
#ifndef ASYNCJOB_EXPERIMENT_NO_FP_CONTROL
        stmxcsr FRAME_MXCSR(%rsp)       /* SSE control/status word */
        fnstcw  FRAME_X87CW(%rsp)       /* x87 control word */
        movl    FRAME_MXCSR(%rsp), %r8d /* keep ours to compare after the switch */
        movzwl  FRAME_X87CW(%rsp), %r9d
#endif

        movq    %rsp, (%rdi)            /* publish where this context is saved */
        movq    %rsi, %rsp              /* ---- now on the resumed context's stack;
                                           its frame has the same layout, so the
                                           CFI above describes it too ---- */

#ifndef ASYNCJOB_EXPERIMENT_NO_FP_CONTROL
        movl    FRAME_MXCSR(%rsp), %r10d /* resumed context's MXCSR */
        xorl    %r10d, %r8d
        testl   $0xffc0, %r8d           /* control bits (not sticky flags) differ? */
        jnz     .Lreload_mxcsr
.Lmxcsr_done:
        cmpw    FRAME_X87CW(%rsp), %r9w /* x87 control word differs? */
        jne     .Lreload_x87cw
#endif
.Lx87cw_done:
.Lrestore_resumed:                      /* also entered from ..._keep_fp below */
        .cfi_remember_state
        leaq    FRAME_FP_CONTROL(%rsp), %rsp
        .cfi_adjust_cfa_offset -FRAME_FP_CONTROL
        popq    %r15
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r15
        popq    %r14
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r14
        popq    %r13
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r13
        popq    %r12
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r12
        popq    %rbx
        .cfi_adjust_cfa_offset -8
        .cfi_restore %rbx
        popq    %rbp
        .cfi_adjust_cfa_offset -8
        .cfi_restore %rbp
        movq    %rdx, %rax              /* the transfer value is our return value */
        popq    %r8                     /* return address of the resumed context */
        .cfi_adjust_cfa_offset -8
        .cfi_register %rip, %r8
        jmp     *%r8
        .cfi_restore_state

#ifndef ASYNCJOB_EXPERIMENT_NO_FP_CONTROL
.Lreload_mxcsr:
        ldmxcsr FRAME_MXCSR(%rsp)
        jmp     .Lmxcsr_done
.Lreload_x87cw:
        fldcw   FRAME_X87CW(%rsp)
        jmp     .Lx87cw_done
#endif
        .cfi_endproc
        .size   asyncjob_context_switch, .-asyncjob_context_switch

/* void *asyncjob_context_switch_keep_fp(void **save_sp, void *load_sp,
 *                                       void *transfer)
 * asyncjob_context_switch, except that the resumed context goes on with the
 * FP control state of the code calling this rather than the one saved in
 * its frame: for starting a new job in a context parked by an earlier job,
 * which may have left another rounding mode there. The state of the context
 * left is saved as usual. With nothing to compare, nothing waits for the
 * stored MXCSR. */
        .globl  asyncjob_context_switch_keep_fp
        .hidden asyncjob_context_switch_keep_fp
        .type   asyncjob_context_switch_keep_fp, @function
        .p2align 4
asyncjob_context_switch_keep_fp:
        .cfi_startproc
        ENDBR
        pushq   %rbp                    /* callee-saved: frame pointer */
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %rbp, 0
        pushq   %rbx                    /* callee-saved */
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %rbx, 0
        pushq   %r12                    /* callee-saved */
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r12, 0
        pushq   %r13                    /* callee-saved */
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r13, 0
        pushq   %r14                    /* callee-saved */
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r14, 0
        pushq   %r15                    /* callee-saved */
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r15, 0
        leaq    -FRAME_FP_CONTROL(%rsp), %rsp /* room for the FP control state */
        .cfi_adjust_cfa_offset FRAME_FP_CONTROL
#ifndef ASYNCJOB_EXPERIMENT_NO_FP_CONTROL
        stmxcsr FRAME_MXCSR(%rsp)       /* SSE control/status word */
        fnstcw  FRAME_X87CW(%rsp)       /* x87 control word */
#endif
        movq    %rsp, (%rdi)            /* publish where this context is saved */
        movq    %rsi, %rsp              /* now on the resumed context's stack */
        jmp     .Lrestore_resumed       /* its registers, not its FP control */
        .cfi_endproc
        .size   asyncjob_context_switch_keep_fp, .-asyncjob_context_switch_keep_fp

/* void *asyncjob_context_divert(void *saved_sp)
 *   rdi = stack pointer of a context saved by the switch
 * Makes that context resume in asyncjob_context_diverted instead of at its
 * return address, which is returned. */
        .globl  asyncjob_context_divert
        .hidden asyncjob_context_divert
        .type   asyncjob_context_divert, @function
        .p2align 4
asyncjob_context_divert:
        .cfi_startproc
        ENDBR
        movq    FRAME_RETURN(%rdi), %rax /* the saved return address */
        leaq    asyncjob_context_diverted(%rip), %rcx
        movq    %rcx, FRAME_RETURN(%rdi)
        ret
        .cfi_endproc
        .size   asyncjob_context_divert, .-asyncjob_context_divert

/* Where a diverted context resumes, entered by the switch's jump: rax holds
 * the transfer value, a pointer to { return address, function, argument },
 * and every other callee-saved register and rsp are those of the code the
 * context was saved in, just after its call to the switch. Pushing the
 * return address rebuilds that call's frame, so that function(argument)
 * runs as if called from that very call site: it may unwind (throw) into
 * the code the context was paused in. */
        .type   asyncjob_context_diverted, @function
        .p2align 4
asyncjob_context_diverted:
        .cfi_startproc
        .cfi_def_cfa_offset 0
        .cfi_undefined %rip             /* until the call frame is rebuilt */
        ENDBR
        pushq   DIVERT_RETURN(%rax)     /* the return address */
        .cfi_def_cfa_offset 8
        .cfi_offset %rip, -8
        movq    DIVERT_ARGUMENT(%rax), %rdi /* function(argument) */
        jmp     *DIVERT_FUNCTION(%rax)
        .cfi_endproc
        .size   asyncjob_context_diverted, .-asyncjob_context_diverted

/* void *asyncjob_context_make(void *stack_top, void (*shim)(void *, void *),
 *                             void *argument)
 *   rdi = top of the new stack, 16-byte aligned
 *   rsi = function the new context calls first: shim(transfer, argument)
 *   rdx = its second argument
 * Returns the stack pointer of a frame laid out as the switch saves one. */
        .globl  asyncjob_context_make
        .hidden asyncjob_context_make
        .type   asyncjob_context_make, @function
        .p2align 4
asyncjob_context_make:
        .cfi_startproc
        ENDBR
        leaq    -FRAME_SIZE(%rdi), %rax /* the frame; popping it leaves rsp = top,
                                           16-byte aligned at the trampoline's call */
        stmxcsr FRAME_MXCSR(%rax)       /* the new context inherits the creator's */
        fnstcw  FRAME_X87CW(%rax)       /* FP control state */
        xorl    %ecx, %ecx
        movq    %rcx, FRAME_R15(%rax)
        movq    %rcx, FRAME_R14(%rax)
        movq    %rdx, FRAME_R13(%rax)   /* argument */
        movq    %rsi, FRAME_R12(%rax)   /* shim */
        movq    %rcx, FRAME_RBX(%rax)
        movq    %rcx, FRAME_RBP(%rax)   /* 0: outermost frame */
        leaq    asyncjob_context_trampoline(%rip), %rcx
        movq    %rcx, FRAME_RETURN(%rax) /* where the first switch "returns" */
        ret
        .cfi_endproc
        .size   asyncjob_context_make, .-asyncjob_context_make

/* First code of every fresh context: rax holds the transfer value of the
 * switch that entered it, r12/r13 the shim and its argument. The shim never
 * returns. There is no caller to unwind to: tell debuggers so. */
        .type   asyncjob_context_trampoline, @function
        .p2align 4
asyncjob_context_trampoline:
        .cfi_startproc
        .cfi_undefined %rip
        ENDBR
        movq    %rax, %rdi              /* shim(transfer, */
        movq    %r13, %rsi              /*      argument) */
        call    *%r12
        ud2                             /* unreachable: the shim never returns */
        .cfi_endproc
        .size   asyncjob_context_trampoline, .-asyncjob_context_trampoline

#endif /* __x86_64__ && __ELF__ */

        .section .note.GNU-stack, "", %progbits
