/* _smx_dispatch.h: run-time CPU dispatch shared by _smx_native.c and _smx_fast.c.
 * Every kernel is compiled three times (x86-64-v4 = AVX-512, x86-64-v3 = AVX2
 * + FMA, baseline = SSE2) and the variant is picked at import (g_isa; each
 * module includes this once and keeps its own). Also the modules' `isa` and
 * `set_isa` (test hook) functions. Needs Python.h and string.h first; not a
 * public header. Never -march=native: the wheel must run everywhere. */
#ifndef SMX_DISPATCH_H
#define SMX_DISPATCH_H

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(SMX_NO_CLONES)
#define SMX_X86 1
#define SMX_V4 __attribute__((target("arch=x86-64-v4,prefer-vector-width=512")))
#define SMX_V3 __attribute__((target("arch=x86-64-v3")))
#else
#define SMX_X86 0
#endif

enum { ISA_BASE = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };
static int g_isa = ISA_BASE;

/* kernel NAME_t(ARGS..., A) -> NAME(ARGS...) dispatching on g_isa, where A is
 * the compile-time constant each variant passes (A4, A3, AB) */
#if SMX_X86
#define SMX_VARIANTS(NAME, PARAMS, A4, A3, AB, ...)                             \
    SMX_V4 static void NAME##_v4 PARAMS { NAME##_t(__VA_ARGS__, A4); }           \
    SMX_V3 static void NAME##_v3 PARAMS { NAME##_t(__VA_ARGS__, A3); }           \
    static void NAME##_base PARAMS { NAME##_t(__VA_ARGS__, AB); }               \
    static void NAME PARAMS {                                                   \
        if (g_isa == ISA_AVX512) NAME##_v4(__VA_ARGS__);                        \
        else if (g_isa == ISA_AVX2) NAME##_v3(__VA_ARGS__);                     \
        else NAME##_base(__VA_ARGS__);                                          \
    }
#else
#define SMX_VARIANTS(NAME, PARAMS, A4, A3, AB, ...)                             \
    static void NAME PARAMS { NAME##_t(__VA_ARGS__, AB); }
#endif

/* the instruction set of the best variant this CPU runs */
static int best_isa(void) {
#if SMX_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return ISA_AVX512;
    if (__builtin_cpu_supports("x86-64-v3")) return ISA_AVX2;
#endif
    return ISA_BASE;
}

static const char *const ISA_NAMES[3] = {"baseline", "avx2", "avx512"};

static PyObject *py_isa(PyObject *self, PyObject *noargs) {
    return PyUnicode_FromString(ISA_NAMES[g_isa]);
}

/* test hook: run the named instruction set's kernels (at most the CPU's best);
 * returns the previous name */
static PyObject *py_set_isa(PyObject *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    int want = -1;
    for (int i = 0; i < 3; i++) if (strcmp(name, ISA_NAMES[i]) == 0) want = i;
    if (want < 0 || want > best_isa()) {
        PyErr_Format(PyExc_ValueError, "instruction set %s is not available", name);
        return NULL;
    }
    const char *old = ISA_NAMES[g_isa];
    g_isa = want;
    return PyUnicode_FromString(old);
}

#endif
