/*
 * context_aarch64_aapcs.S - context switch for AArch64, AAPCS64 (Linux ELF).
 *
 * Frame saved on the stack being left (lowest address first, 176 bytes, so
 * the stack pointer stays 16-byte aligned as AAPCS64 requires at all times):
 *
 *    0  FPCR (8 bytes)           FP control: rounding, flush-to-zero, traps
 *    8  (unused, keeps the frame a multiple of 16)
 *   16  d8,  d9                  callee-saved: low 64 bits of v8-v15 only
 *   32  d10, d11
 *   48  d12, d13
 *   64  d14, d15
 *   80  x19, x20                 fresh context: x19 = shim, x20 = argument
 *   96  x21, x22
 *  112  x23, x24
 *  128  x25, x26
 *  144  x27, x28
 *  160  x29 (frame pointer)      fresh context: 0, the outermost frame
 *  168  x30 (return address)     fresh context: the trampoline
 *
 * The FP control state is part of each context, but `msr fpcr` can be slow
 * (on some cores it synchronises the FP pipeline), so it is reloaded only
 * when the two contexts' values differ. FPCR holds control bits only and is
 * compared whole; the sticky exception flags live in FPSR, which is status,
 * not context, and is neither saved nor restored (as for any function call).
 *
 * The switch ends in `ret`, not `br`: the resumed code is an ordinary call
 * site after `bl`, which carries no BTI landing pad, and `ret` is the one
 * indirect branch that BTI does not check. (The cost is one miss in the
 * return-stack predictor per switch; a `br` would miss in the indirect
 * predictor as often, and would fault on guarded pages.)
 *
 * Branch protection. The file is BTI-clean: `bti c` (hint #34, a NOP on
 * cores without BTI) starts both exported functions, which may be reached by
 * `blr`, and the trampoline starts with `bti j` although it is entered only by
 * the switch's `ret`, which BTI does not check, so that it stays a valid
 * target should the switch ever end in `br`. The .note.gnu.property section
 * below therefore claims GNU_PROPERTY_AARCH64_FEATURE_1_BTI, and only that.
 * It does not claim PAC: the return addresses saved here are stored and
 * reloaded unsigned (return addresses of compiled callers are signed in
 * their own frames and are not affected). The linker ANDs these properties
 * over all input objects, so linking this file into a program built with
 * -mbranch-protection=standard keeps it BTI-enforced; only its PAC marking is
 * dropped, which is the truth about this file. A PAC-ret version could sign
 * x30 with the stack pointer at entry (paciasp) before saving it: the
 * resumed side's sp after popping its frame is that same value, so autiasp
 * would verify it; context_make would have to sign the trampoline address
 * with stack_top as the modifier.
 */

#if defined(__aarch64__) && defined(__ELF__)

#define BTI_C   hint    #34             /* landing pad for blr / br x16, x17 */
#define BTI_J   hint    #36             /* landing pad for br */

#define FRAME_SIZE 176

        .text

/* void *asyncjob_context_switch(void **save_sp, void *load_sp, void *transfer)
 *   x0 = where to store this context's stack pointer
 *   x1 = stack pointer of the context to resume
 *   x2 = value handed to the resumed context (its return value, in x0) */
        .globl  asyncjob_context_switch
        .hidden asyncjob_context_switch
        .type   asyncjob_context_switch, %function
        .p2align 4
asyncjob_context_switch:
        .cfi_startproc
        BTI_C
        sub     sp, sp, #FRAME_SIZE
        .cfi_def_cfa_offset FRAME_SIZE
        stp     x29, x30, [sp, #160]    /* frame pointer, return address */
        .cfi_offset x29, -16
        .cfi_offset x30, -8
        stp     x27, x28, [sp, #144]    /* callee-saved */
        .cfi_offset x27, -32
        .cfi_offset x28, -24
        stp     x25, x26, [sp, #128]    /* callee-saved */
        .cfi_offset x25, -48
        .cfi_offset x26, -40
        stp     x23, x24, [sp, #112]    /* callee-saved */
        .cfi_offset x23, -64
        .cfi_offset x24, -56
        stp     x21, x22, [sp, #96]     /* callee-saved */
        .cfi_offset x21, -80
        .cfi_offset x22, -72
        stp     x19, x20, [sp, #80]     /* callee-saved */
        .cfi_offset x19, -96
        .cfi_offset x20, -88
        stp     d14, d15, [sp, #64]     /* callee-saved (low halves of v14, v15) */
        .cfi_offset d14, -112
        .cfi_offset d15, -104
        stp     d12, d13, [sp, #48]     /* callee-saved (low halves of v12, v13) */
        .cfi_offset d12, -128
        .cfi_offset d13, -120
        stp     d10, d11, [sp, #32]     /* callee-saved (low halves of v10, v11) */
        .cfi_offset d10, -144
        .cfi_offset d11, -136
        stp     d8, d9, [sp, #16]       /* callee-saved (low halves of v8, v9) */
        .cfi_offset d8, -160
        .cfi_offset d9, -152
        mrs     x9, fpcr                /* FP control; x9 keeps it to compare */
        str     x9, [sp]

        mov     x10, sp
        str     x10, [x0]               /* publish where this context is saved */
        mov     sp, x1                  /* ---- now on the resumed context's stack;
                                           its frame has the same layout, so the
                                           CFI above describes it too ---- */

        ldr     x10, [sp]               /* resumed context's FPCR */
        cmp     x10, x9
        b.ne    .Lreload_fpcr           /* reload only when it differs */
.Lfpcr_done:
.Lrestore_resumed:                      /* also entered from ..._keep_fp below */
        .cfi_remember_state
        ldp     d8, d9, [sp, #16]
        .cfi_restore d8
        .cfi_restore d9
        ldp     d10, d11, [sp, #32]
        .cfi_restore d10
        .cfi_restore d11
        ldp     d12, d13, [sp, #48]
        .cfi_restore d12
        .cfi_restore d13
        ldp     d14, d15, [sp, #64]
        .cfi_restore d14
        .cfi_restore d15
        ldp     x19, x20, [sp, #80]
        .cfi_restore x19
        .cfi_restore x20
        ldp     x21, x22, [sp, #96]
        .cfi_restore x21
        .cfi_restore x22
        ldp     x23, x24, [sp, #112]
        .cfi_restore x23
        .cfi_restore x24
        ldp     x25, x26, [sp, #128]
        .cfi_restore x25
        .cfi_restore x26
        ldp     x27, x28, [sp, #144]
        .cfi_restore x27
        .cfi_restore x28
        ldp     x29, x30, [sp, #160]    /* x30: where the resumed context goes on */
        .cfi_restore x29
        .cfi_restore x30
        add     sp, sp, #FRAME_SIZE
        .cfi_def_cfa_offset 0
        mov     x0, x2                  /* the transfer value is our return value */
        ret                             /* not `br`: see the header comment */
        .cfi_restore_state

.Lreload_fpcr:
        msr     fpcr, x10
        b       .Lfpcr_done
        .cfi_endproc
        .size   asyncjob_context_switch, .-asyncjob_context_switch

/* void *asyncjob_context_switch_keep_fp(void **save_sp, void *load_sp,
 *                                       void *transfer)
 * asyncjob_context_switch, except that the resumed context goes on with the
 * FPCR of the code calling this rather than the one saved in its frame: for
 * starting a new job in a context parked by an earlier job, which may have
 * left another rounding mode there. The FPCR of the context left is saved
 * as usual. */
        .globl  asyncjob_context_switch_keep_fp
        .hidden asyncjob_context_switch_keep_fp
        .type   asyncjob_context_switch_keep_fp, %function
        .p2align 4
asyncjob_context_switch_keep_fp:
        .cfi_startproc
        BTI_C
        sub     sp, sp, #FRAME_SIZE
        .cfi_def_cfa_offset FRAME_SIZE
        stp     x29, x30, [sp, #160]    /* frame pointer, return address */
        .cfi_offset x29, -16
        .cfi_offset x30, -8
        stp     x27, x28, [sp, #144]    /* callee-saved */
        .cfi_offset x27, -32
        .cfi_offset x28, -24
        stp     x25, x26, [sp, #128]    /* callee-saved */
        .cfi_offset x25, -48
        .cfi_offset x26, -40
        stp     x23, x24, [sp, #112]    /* callee-saved */
        .cfi_offset x23, -64
        .cfi_offset x24, -56
        stp     x21, x22, [sp, #96]     /* callee-saved */
        .cfi_offset x21, -80
        .cfi_offset x22, -72
        stp     x19, x20, [sp, #80]     /* callee-saved */
        .cfi_offset x19, -96
        .cfi_offset x20, -88
        stp     d14, d15, [sp, #64]     /* callee-saved (low halves of v14, v15) */
        .cfi_offset d14, -112
        .cfi_offset d15, -104
        stp     d12, d13, [sp, #48]     /* callee-saved (low halves of v12, v13) */
        .cfi_offset d12, -128
        .cfi_offset d13, -120
        stp     d10, d11, [sp, #32]     /* callee-saved (low halves of v10, v11) */
        .cfi_offset d10, -144
        .cfi_offset d11, -136
        stp     d8, d9, [sp, #16]       /* callee-saved (low halves of v8, v9) */
        .cfi_offset d8, -160
        .cfi_offset d9, -152
        mrs     x9, fpcr                /* FP control */
        str     x9, [sp]

        mov     x10, sp
        str     x10, [x0]               /* publish where this context is saved */
        mov     sp, x1                  /* now on the resumed context's stack */
        b       .Lrestore_resumed       /* its registers, not its FPCR */
        .cfi_endproc
        .size   asyncjob_context_switch_keep_fp, .-asyncjob_context_switch_keep_fp

/* void *asyncjob_context_divert(void *saved_sp)
 *   x0 = stack pointer of a context saved by the switch
 * Makes that context resume in asyncjob_context_diverted instead of at its
 * return address (x30), which is returned. */
        .globl  asyncjob_context_divert
        .hidden asyncjob_context_divert
        .type   asyncjob_context_divert, %function
        .p2align 4
asyncjob_context_divert:
        .cfi_startproc
        BTI_C
        ldr     x9, [x0, #168]          /* the saved x30 */
        adr     x10, asyncjob_context_diverted
        str     x10, [x0, #168]
        mov     x0, x9
        ret
        .cfi_endproc
        .size   asyncjob_context_divert, .-asyncjob_context_divert

/* Where a diverted context resumes, entered by the switch's `ret`: x0 holds
 * the transfer value, a pointer to { return address, function, argument },
 * and the callee-saved registers and sp are those of the code the context
 * was saved in, just after its call to the switch. Loading the return
 * address into x30 recreates that call, so that function(argument) runs as
 * if called from that very call site: it may unwind (throw) into the code
 * the context was paused in. */
        .type   asyncjob_context_diverted, %function
        .p2align 4
asyncjob_context_diverted:
        .cfi_startproc
        .cfi_undefined x30              /* until x30 is reloaded below */
        BTI_J                           /* entered by `ret` (see the header) */
        ldr     x30, [x0]               /* the return address */
        .cfi_same_value x30
        ldr     x16, [x0, #8]           /* function: through x16, which a */
        ldr     x0, [x0, #16]           /* `bti c` landing pad accepts */
        br      x16
        .cfi_endproc
        .size   asyncjob_context_diverted, .-asyncjob_context_diverted

/* void *asyncjob_context_make(void *stack_top, void (*shim)(void *, void *),
 *                             void *argument)
 *   x0 = top of the new stack, 16-byte aligned
 *   x1 = function the new context calls first: shim(transfer, argument)
 *   x2 = its second argument
 * Returns the stack pointer of a frame laid out as the switch saves one. */
        .globl  asyncjob_context_make
        .hidden asyncjob_context_make
        .type   asyncjob_context_make, %function
        .p2align 4
asyncjob_context_make:
        .cfi_startproc
        BTI_C
        sub     x9, x0, #FRAME_SIZE     /* the frame; popping it leaves sp = top,
                                           16-byte aligned in the trampoline */
        mrs     x10, fpcr               /* the new context inherits the creator's */
        stp     x10, xzr, [x9, #0]      /* FPCR, unused slot */
        stp     xzr, xzr, [x9, #16]     /* d8, d9 */
        stp     xzr, xzr, [x9, #32]     /* d10, d11 */
        stp     xzr, xzr, [x9, #48]     /* d12, d13 */
        stp     xzr, xzr, [x9, #64]     /* d14, d15 */
        stp     x1, x2, [x9, #80]       /* x19 = shim, x20 = argument */
        stp     xzr, xzr, [x9, #96]     /* x21, x22 */
        stp     xzr, xzr, [x9, #112]    /* x23, x24 */
        stp     xzr, xzr, [x9, #128]    /* x25, x26 */
        stp     xzr, xzr, [x9, #144]    /* x27, x28 */
        adr     x10, asyncjob_context_trampoline
        stp     xzr, x10, [x9, #160]    /* x29 = 0: outermost frame;
                                           x30: where the first switch "returns" */
        mov     x0, x9
        ret
        .cfi_endproc
        .size   asyncjob_context_make, .-asyncjob_context_make

/* First code of every fresh context: x0 holds the transfer value of the
 * switch that entered it, x19/x20 the shim and its argument, sp the 16-byte
 * aligned top of the stack. The shim never returns. There is no caller to
 * unwind to: tell debuggers so. */
        .type   asyncjob_context_trampoline, %function
        .p2align 4
asyncjob_context_trampoline:
        .cfi_startproc
        .cfi_undefined x30
        BTI_J                           /* entered by `ret` (see the header) */
        mov     x1, x20                 /* shim(transfer (already in x0), */
        blr     x19                     /*      argument) */
        brk     #0x3e8                  /* unreachable: the shim never returns */
        .cfi_endproc
        .size   asyncjob_context_trampoline, .-asyncjob_context_trampoline

/* GNU property note: this object supports BTI (and claims nothing else). */
        .section .note.gnu.property, "a"
        .p2align 3
        .word   4                       /* n_namesz: "GNU\0" */
        .word   16                      /* n_descsz: one property, padded */
        .word   5                       /* n_type: NT_GNU_PROPERTY_TYPE_0 */
        .asciz  "GNU"
        .word   0xc0000000              /* pr_type: GNU_PROPERTY_AARCH64_FEATURE_1_AND */
        .word   4                       /* pr_datasz */
        .word   1                       /* GNU_PROPERTY_AARCH64_FEATURE_1_BTI; not PAC (2) */
        .word   0                       /* pad to 8 bytes */

#endif /* __aarch64__ && __ELF__ */

        .section .note.GNU-stack, "", %progbits
