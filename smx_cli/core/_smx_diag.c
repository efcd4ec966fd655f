/* _smx_diag: the diagnostics panel's counts in one pass over a block of rows
 * (module smx_cli.core._smx_diag; wrapper smx_cli/analysis/diag_native.py).
 *
 * What smx_cli.analysis.diagnostics.Accumulator._add_clean counts with ~6 numpy
 * passes (row sums, zeros, subnormals, argmax, min, max), in one read of the
 * values and one of the logits, for the rows whose logits and values are all
 * finite ("clean" rows; the caller sends the rest to the careful numpy path).
 *
 *   - probabilities: the row sum in float64 with TwoSum per lane (error ~2 u of
 *     the sum, far below the 4 eps the panel tolerates), |sum - 1|;
 *   - log-probabilities: 16/32-bit ones also |sum(exp) - 1| (a short exp in
 *     float64, relative error < 2^-31, far below 4 eps of those formats);
 *     float64 ones leave the sum to numpy's exp and the split sum;
 *   - argmax: the first index of the row maximum, as numpy.argmax (each lane
 *     keeps the index of its first maximum; the smallest of those holding the
 *     row maximum wins).
 *
 * CPython C API and the buffer protocol only; the GIL is released in the loop.
 * Same build flags as _smx_native (-ffp-contract=off keeps TwoSum exact).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(SMX_NO_CLONES)
#define SMX_X86 1
#else
#define SMX_X86 0
#endif
#include "_smx_common.h"

#define LANES 4

/* 4-lane vectors (GCC/Clang vector extensions): each copy of the kernel lowers
 * them to its own instructions (one AVX2 register, two SSE2 ones), so the row
 * loops are vectorised whatever the auto-vectoriser makes of mixed widths.
 * (8 lanes of 64 bytes crash gcc 12 in the AVX2 copy: internal compiler error.)
 * The helpers are always inlined: their vector ABI never matters. */
#pragma GCC diagnostic ignored "-Wpsabi"
typedef double v4d __attribute__((vector_size(32)));
typedef int64_t v4l __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef uint32_t v4u __attribute__((vector_size(16)));
typedef uint16_t v4h __attribute__((vector_size(8)));

AI v4d sel(v4l m, v4d a, v4d b) { return (v4d)((m & (v4l)a) | (~m & (v4l)b)); }
AI v4d splat(double a) { return (v4d){a, a, a, a}; }

AI v4d ldv(const void *p, Py_ssize_t j, const int DT) {
    if (DT == DT_F64) { v4d v; memcpy(&v, (const double *)p + j, 32); return v; }
    if (DT == DT_F32) { v4f f; memcpy(&f, (const float *)p + j, 16); return __builtin_convertvector(f, v4d); }
    v4h h;
    memcpy(&h, (const uint16_t *)p + j, 8);
    v4u u = __builtin_convertvector(h, v4u);
    if (DT == DT_BF16) return __builtin_convertvector((v4f)(u << 16), v4d);
    /* float16: as f16_to_f32, lane-wise */
    v4u sign = (u & 0x8000u) << 16, a = u & 0x7fffu;
    v4f v = (v4f)(a << 13) * 0x1p112f;
    v4u special = 0x7f800000u | (a & 0x3ffu) << 13;
    v4u m = (v4u)(a >= 0x7c00u);
    v4u bits = (special & m) | ((v4u)v & ~m);
    return __builtin_convertvector((v4f)(bits | sign), v4d);
}

typedef struct {
    int64_t zeros, subnormal, off, clean_rows;
    double max_err, vmin, vmax;
} totals_t;

typedef struct {
    const void *x, *y;
    Py_ssize_t n, c;
    int kind;              /* 0 prob, 1 logprob */
    double tiny;           /* prob: smallest normal; logprob: its log */
    double tol;            /* |sum - 1| above this is "off" */
    int64_t *counts;       /* argmax histogram, c entries (accumulated) */
    uint8_t *unclean;      /* n flags out */
} diag_args;

/* all finite: a sum of (v - v) is NaN exactly when some v is NaN or +-inf */
AI int finite_row(const void *p, Py_ssize_t c, const int DT) {
    v4d acc = splat(0.0);
    Py_ssize_t j = 0;
    for (; j + LANES <= c; j += LANES) { v4d v = ldv(p, j, DT); acc += v - v; }
    double t = 0.0;
    for (; j < c; j++) { double v = ld(p, j, DT); t += v - v; }
    for (int l = 0; l < LANES; l++) t += acc[l];
    return t == 0.0;
}

/* exp(v) for v <= ~0 with relative error below 2^-31 (Cody-Waite, then the
 * Taylor polynomial to r^8/8! by Estrin's scheme: truncation 2^-31.7 relative
 * for |r| <= ln2/2, checked against mpmath; a few u of rounding): ample for the
 * |sum - 1| check of 16/32-bit log-probabilities (tolerance 4 eps of the format
 * >= 2^-21) and for the max |sum - 1| the panel prints (4 significant digits);
 * below -708 it returns 0 */
AI double exp_small(double v) {
    double vc = v < -708.0 ? -708.0 : v;
    vc = vc > 700.0 ? 700.0 : vc;
    double kd = vc * 0x1.71547652b82fep0 + 0x1.8p52;   /* round to an integer, in the bits */
    uint64_t ki; memcpy(&ki, &kd, 8);
    kd -= 0x1.8p52;
    double r = (vc - kd * 0x1.62e42feep-1) - kd * 0x1.a39ef35793c76p-33;
    double r2 = r * r, r4 = r2 * r2;
    double c03 = (r * (1.0 / 6.0) + 0.5) * r2 + (r + 1.0);
    double c47 = (r * (1.0 / 5040.0) + 1.0 / 720.0) * r2 + (r * (1.0 / 120.0) + 1.0 / 24.0);
    double p = (r4 * (1.0 / 40320.0) + c47) * r4 + c03;
    uint64_t bits = (ki - 0x4338000000000000ull + 1023) << 52; /* 2^k: ki holds 1.5 2^52 + k */
    double scale; memcpy(&scale, &bits, 8);
    return v < -708.0 ? 0.0 : p * scale;
}

AI v4d exp_small_v(v4d v) {
    v4d vc = sel(v < -708.0, splat(-708.0), v);
    vc = sel(vc > 700.0, splat(700.0), vc);
    v4d kd = vc * 0x1.71547652b82fep0 + 0x1.8p52;
    v4l ki = (v4l)kd;
    kd -= 0x1.8p52;
    v4d r = (vc - kd * 0x1.62e42feep-1) - kd * 0x1.a39ef35793c76p-33;
    v4d r2 = r * r, r4 = r2 * r2;
    v4d c03 = (r * (1.0 / 6.0) + 0.5) * r2 + (r + 1.0);
    v4d c47 = (r * (1.0 / 5040.0) + 1.0 / 720.0) * r2 + (r * (1.0 / 120.0) + 1.0 / 24.0);
    v4d p = (r4 * (1.0 / 40320.0) + c47) * r4 + c03;
    v4l bits = (ki - (int64_t)0x4338000000000000ll + 1023) << 52;
    return sel(v < -708.0, splat(0.0), p * (v4d)bits);
}

/* KIND 0: probabilities; 1: log-probabilities (sum of exp only when LSUM) */
AI void rows_t(const diag_args *A, totals_t *T, const int XDT, const int YDT, const int KIND) {
    Py_ssize_t c = A->c;
    size_t xs = (size_t)ITEMSIZE[XDT], ys = (size_t)ITEMSIZE[YDT];
    /* float64 probabilities need a compensated sum; 16/32-bit ones and the
     * exp of 16/32-bit log-probabilities are summed plainly in float64 */
    const int TWO_SUM = KIND == 0 && YDT == DT_F64;
    const int SUM = KIND == 0 || YDT != DT_F64;
    for (Py_ssize_t r = 0; r < A->n; r++) {
        const char *x = (const char *)A->x + (size_t)r * c * xs;
        const char *y = (const char *)A->y + (size_t)r * c * ys;
        if (!finite_row(x, c, XDT) || !finite_row(y, c, YDT)) { A->unclean[r] = 1; continue; }
        A->unclean[r] = 0;
        T->clean_rows++;
        v4d sh = splat(0.0), sl = splat(0.0), mn = splat(INFINITY), mx = splat(-INFINITY);
        v4l z = {0}, sub = {0};   /* comparisons give -1 per true lane: subtracted */
        v4l at = {0, 1, 2, 3}, arg = {0, 1, 2, 3}; /* each lane's first maximum */
        const double tiny = A->tiny;
        Py_ssize_t j = 0;
        for (; j + LANES <= c; j += LANES) {
            v4d v = ldv(y, j, YDT);
            if (KIND == 0) {
                z -= (v == 0.0);
                sub -= (v > 0.0) & (v < tiny);
            } else {
                sub -= (v < tiny);
            }
            v4d p = KIND == 0 ? v : (SUM ? exp_small_v(v) : splat(0.0));
            if (TWO_SUM) {
                v4d t = sh + p, bv = t - sh;
                sl += (sh - (t - bv)) + (p - bv); /* TwoSum error */
                sh = t;
            } else if (SUM) {
                sh += p;
            }
            mn = sel(v < mn, v, mn);
            v4l up = v > mx;
            mx = sel(up, v, mx);
            arg = (up & at) | (~up & arg);
            at += LANES;
        }
        int64_t zt = 0, subt = 0, targ = -1;
        double th = 0.0, tl = 0.0, tmn = INFINITY, tmx = -INFINITY;
        for (; j < c; j++) {   /* the last c % 4 entries, one at a time */
            double v = ld(y, j, YDT);
            if (KIND == 0) { zt += v == 0.0; subt += (v > 0.0) & (v < tiny); }
            else subt += v < tiny;
            double p = KIND == 0 ? v : (SUM ? exp_small(v) : 0.0);
            double t = th + p, bv = t - th;
            tl += (th - (t - bv)) + (p - bv);
            th = t;
            tmn = v < tmn ? v : tmn;
            targ = v > tmx ? j : targ;
            tmx = v > tmx ? v : tmx;
        }
        T->zeros += zt;
        T->subnormal += subt;
        double hi = th, lo = tl, rmin = tmn, rmax = tmx;
        for (int l = 0; l < LANES; l++) {
            double s = hi + sh[l], bv = s - hi;
            lo += ((hi - (s - bv)) + (sh[l] - bv)) + sl[l];
            hi = s;
            rmin = mn[l] < rmin ? mn[l] : rmin;
            rmax = mx[l] > rmax ? mx[l] : rmax;
            T->zeros += z[l];
            T->subnormal += sub[l];
        }
        if (SUM) {
            double err = fabs((hi - 1.0) + lo);
            T->off += err > A->tol;
            T->max_err = err > T->max_err ? err : T->max_err;
        }
        T->vmin = rmin < T->vmin ? rmin : T->vmin;
        T->vmax = rmax > T->vmax ? rmax : T->vmax;
        /* the first maximum: the smallest index holding rmax */
        int64_t k = rmax == tmx ? targ : c;
        for (int l = 0; l < LANES; l++)
            if (c >= LANES && mx[l] == rmax && arg[l] < k) k = arg[l];
        A->counts[k >= 0 && k < c ? k : 0]++;
    }
}

AI void rows_k(const diag_args *A, totals_t *T, const int XDT, const int YDT) {
    if (A->kind == 0) rows_t(A, T, XDT, YDT, 0);
    else rows_t(A, T, XDT, YDT, 1);
}

#define YSWITCH(XDT)                                                \
    switch (ydt) {                                                  \
    case DT_F16: rows_k(A, T, XDT, DT_F16); break;                  \
    case DT_BF16: rows_k(A, T, XDT, DT_BF16); break;                \
    case DT_F32: rows_k(A, T, XDT, DT_F32); break;                  \
    default: rows_k(A, T, XDT, DT_F64); break;                      \
    }

AI void rows_any(const diag_args *A, totals_t *T, int xdt, int ydt) {
    switch (xdt) {
    case DT_F16: YSWITCH(DT_F16) break;
    case DT_BF16: YSWITCH(DT_BF16) break;
    case DT_F32: YSWITCH(DT_F32) break;
    default: YSWITCH(DT_F64) break;
    }
}

/* run-time dispatch by hand, one copy per instruction set (gcc 12's
 * target_clones hits an internal compiler error on this body) */
#if SMX_X86
__attribute__((target("arch=x86-64-v4")))
static void rows_v4(const diag_args *A, totals_t *T, int xdt, int ydt) { rows_any(A, T, xdt, ydt); }
__attribute__((target("arch=x86-64-v3")))
static void rows_v3(const diag_args *A, totals_t *T, int xdt, int ydt) { rows_any(A, T, xdt, ydt); }
#endif
static void rows_base(const diag_args *A, totals_t *T, int xdt, int ydt) { rows_any(A, T, xdt, ydt); }

typedef void (*rows_fn)(const diag_args *, totals_t *, int, int);
static rows_fn g_rows = rows_base;

/* summarize(x, xdt, y, ydt, n, c, kind, tiny, tol, counts, unclean)
 *   -> (zeros, subnormal, off, max_err, vmin, vmax, clean_rows) over the clean rows
 *   (off and max_err are 0 for float64 log-probabilities: not summed here) */
static PyObject *py_summarize(PyObject *self, PyObject *args) {
    PyObject *xo, *yo, *co, *uo;
    int xdt, ydt, kind;
    Py_ssize_t n, c;
    double tiny, tol;
    if (!PyArg_ParseTuple(args, "OiOinniddOO", &xo, &xdt, &yo, &ydt, &n, &c, &kind, &tiny, &tol,
                          &co, &uo))
        return NULL;
    if (xdt < 0 || xdt > 3 || ydt < 0 || ydt > 3 || n < 0 || c < 1 || (kind != 0 && kind != 1)) {
        PyErr_SetString(PyExc_ValueError, "bad dtype code, shape or kind");
        return NULL;
    }
    Py_buffer xb, yb, cb, ub;
    if (get_buf(xo, &xb, 0, n * c * ITEMSIZE[xdt], "x") < 0) return NULL;
    if (get_buf(yo, &yb, 0, n * c * ITEMSIZE[ydt], "y") < 0) goto fail_x;
    if (get_buf(co, &cb, 1, c * 8, "counts") < 0) goto fail_y;
    if (get_buf(uo, &ub, 1, n, "unclean") < 0) goto fail_c;
    diag_args A = {xb.buf, yb.buf, n, c, kind, tiny, tol, (int64_t *)cb.buf, (uint8_t *)ub.buf};
    totals_t T = {0, 0, 0, 0, 0.0, INFINITY, -INFINITY};
    Py_BEGIN_ALLOW_THREADS
    g_rows(&A, &T, xdt, ydt);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&ub); PyBuffer_Release(&cb); PyBuffer_Release(&yb); PyBuffer_Release(&xb);
    return Py_BuildValue("(LLLdddL)", (long long)T.zeros, (long long)T.subnormal,
                         (long long)T.off, T.max_err, T.vmin, T.vmax, (long long)T.clean_rows);
fail_c:
    PyBuffer_Release(&cb);
fail_y:
    PyBuffer_Release(&yb);
fail_x:
    PyBuffer_Release(&xb);
    return NULL;
}

static PyMethodDef methods[] = {
    {"summarize", py_summarize, METH_VARARGS,
     "summarize(x, xdt, y, ydt, n, c, kind, tiny, tol, counts, unclean) -> totals of clean rows"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_smx_diag",
                                    "One-pass diagnostics counts for smx.", -1, methods};

PyMODINIT_FUNC PyInit__smx_diag(void) {
#if SMX_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) g_rows = rows_v4;
    else if (__builtin_cpu_supports("x86-64-v3")) g_rows = rows_v3;
#endif
    return PyModule_Create(&moddef);
}
