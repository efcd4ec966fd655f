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
 *   - the top-p size of language-model rows (top_p, below);
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
#include <stdlib.h>
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
        A->unclean[r] = 1;
        if (!finite_row(x, c, XDT)) continue;
        /* y's finiteness is checked in the same pass (fin: a sum of v - v);
         * nothing is added to the totals before it is known */
        v4d sh = splat(0.0), sl = splat(0.0), mn = splat(INFINITY), mx = splat(-INFINITY);
        v4d fin = splat(0.0);
        v4l z = {0}, sub = {0};   /* comparisons give -1 per true lane: subtracted */
        v4l at = {0, 1, 2, 3}, arg = {0, 1, 2, 3}; /* each lane's first maximum */
        const double tiny = A->tiny;
        Py_ssize_t j = 0;
        for (; j + LANES <= c; j += LANES) {
            v4d v = ldv(y, j, YDT);
            fin += v - v;
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
        double tfin = 0.0;
        for (; j < c; j++) {   /* the last c % 4 entries, one at a time */
            double v = ld(y, j, YDT);
            tfin += v - v;
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
        for (int l = 0; l < LANES; l++) tfin += fin[l];
        if (tfin != 0.0) continue;   /* NaN or inf in y: not a clean row */
        A->unclean[r] = 0;
        T->clean_rows++;
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

/* ------------------------------------------------------------------------ */
/* top-p size: how many of a row's most likely classes hold mass p           */
/*
 * The smallest k with p_(1) + ... + p_(k) >= p, probabilities sorted in
 * decreasing order (smx_cli.analysis.sequences.top_p_count, its numpy
 * reference). e_j = exp(x_j - m) (m the row maximum), Z = sum e_j in float64.
 * Only candidates are selected from: the entries below t = (1 - p) Z / C hold
 * less than (1 - p) Z together, so the top-k set lies among the entries >= t
 * (a language model's peaked row has a handful). A row with a NaN, a +inf or
 * no finite entry counts 0.
 */
typedef struct {
    const void *x;
    Py_ssize_t n, c;
    double p;
    int64_t *out;
    double *cand;         /* scratch, c doubles */
} topp_args;

/* the smallest k such that the k largest of v[0:k_n] sum to >= target (all
 * k_n if none): a selection, expected O(k_n), instead of a sort. Three-way
 * partitions around a pivot (the middle element): if the part above it holds
 * the target, go on there; else take it whole, then the copies of the pivot
 * one at a time (as a sorted running sum would), then go on below. */
static Py_ssize_t top_sum_count(double *v, Py_ssize_t k_n, double target) {
    Py_ssize_t k = 0;
    double acc = 0.0;
    while (k_n > 0) {
        double pivot = v[k_n / 2];
        Py_ssize_t hi = 0, lo = k_n;       /* v[0:hi] > pivot, v[lo:k_n] < pivot */
        for (Py_ssize_t i = 0; i < lo;) {
            double a = v[i];
            if (a > pivot) { v[i] = v[hi]; v[hi++] = a; i++; }
            else if (a < pivot) { v[i] = v[--lo]; v[lo] = a; }
            else i++;
        }
        double above = 0.0;
        for (Py_ssize_t i = 0; i < hi; i++) above += v[i];
        if (acc + above >= target && hi > 0) { k_n = hi; continue; }
        acc += above;
        k += hi;
        for (Py_ssize_t i = hi; i < lo; i++) {
            acc += pivot;
            k++;
            if (acc >= target) return k;
        }
        memmove(v, v + lo, sizeof(double) * (size_t)(k_n - lo));
        k_n -= lo;
    }
    return k;
}

/* 16/32-bit inputs only (float64 ones stay with the numpy reference, whose
 * float64 exp and sorted running sum decide rows that tie to the last ulp):
 * float32 arithmetic over 8 lanes, as the numpy reference works in float32
 * for them: d = fl(x - m), exp(d) by Cody-Waite in float32
 * and the Taylor polynomial to r^6/6! (truncation 2^-23.6 at |r| = ln2/2), 0
 * below -87 (terms < 2^-125: the sum Z >= 1 does not see them and they are
 * far below t0); relative error a few float32 ulps plus |d| 2^-24 from the
 * shift. The sums and the selection in float64. */
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef uint16_t v8h __attribute__((vector_size(16)));

AI v8f sel8(v8i m, v8f a, v8f b) { return (v8f)((m & (v8i)a) | (~m & (v8i)b)); }

AI v8f ld8(const void *p, Py_ssize_t j, const int DT) {
    if (DT == DT_F32) { v8f f; memcpy(&f, (const float *)p + j, 32); return f; }
    v8h h;
    memcpy(&h, (const uint16_t *)p + j, 16);
    v8u u = __builtin_convertvector(h, v8u);
    if (DT == DT_BF16) return (v8f)(u << 16);
    v8u sign = (u & 0x8000u) << 16, a = u & 0x7fffu;   /* float16, as f16_to_f32 */
    v8f v = (v8f)(a << 13) * 0x1p112f;
    v8u special = 0x7f800000u | (a & 0x3ffu) << 13;
    v8u big = (v8u)(a >= 0x7c00u);
    return (v8f)(((special & big) | ((v8u)v & ~big)) | sign);
}

AI v8f exp8(v8f d) {
    v8i under = d < -87.0f;
    v8f dc = sel8(under, (v8f){0}, d);
    v8f kd = dc * 0x1.715476p0f + 0x1.8p23f;
    v8i ki = (v8i)kd;
    kd -= 0x1.8p23f;
    v8f r = (dc - kd * 0x1.62e4p-1f) - kd * 0x1.7f7d1cp-20f;
    v8f q = ((((r * (1.0f / 720.0f) + 1.0f / 120.0f) * r + 1.0f / 24.0f) * r + 1.0f / 6.0f) * r
             + 0.5f) * r + 1.0f;
    q = q * r + 1.0f;
    v8i bits = (ki - 0x4b400000 + 127) << 23;   /* 2^k: ki holds 1.5 2^23 + k */
    return sel8(under, (v8f){0}, q * (v8f)bits);
}

AI void topp32_t(const topp_args *A, const int DT) {
    Py_ssize_t c = A->c;
    size_t xs = (size_t)ITEMSIZE[DT];
    for (Py_ssize_t r = 0; r < A->n; r++) {
        const char *x = (const char *)A->x + (size_t)r * c * xs;
        v8f mv = (v8f){0} - INFINITY;
        v8i badv = {0};
        Py_ssize_t j = 0;
        for (; j + 8 <= c; j += 8) {
            v8f v = ld8(x, j, DT);
            mv = sel8(v > mv, v, mv);
            badv |= (v != v) | (v == INFINITY);
        }
        float m = -INFINITY;
        int bad = 0;
        for (; j < c; j++) {
            float v = (float)ld(x, j, DT);
            m = v > m ? v : m;
            bad |= (v != v) | (v == INFINITY);
        }
        for (int l = 0; l < 8; l++) { m = mv[l] > m ? mv[l] : m; bad |= badv[l]; }
        A->out[r] = 0;
        if (bad || !(m > -INFINITY)) continue;
        /* Z in one tight pass; then the candidates by comparing x itself with
         * m + log t (lowered by 2^-10 absolute: exp8's error is far smaller),
         * and exp only for those, kept when e >= t */
        v4d zv = splat(0.0);
        for (j = 0; j + 8 <= c; j += 8) {
            v8f ev = exp8(ld8(x, j, DT) - m);
            v4f lo = __builtin_shufflevector(ev, ev, 0, 1, 2, 3);
            v4f hi = __builtin_shufflevector(ev, ev, 4, 5, 6, 7);
            zv += __builtin_convertvector(lo, v4d) + __builtin_convertvector(hi, v4d);
        }
        double z = 0.0;
        for (; j < c; j++) {
            v8f one = {(float)ld(x, j, DT) - m};
            z += exp8(one)[0];
        }
        for (int l = 0; l < LANES; l++) z += zv[l];
        double t = (1.0 - A->p) * z / (double)c, target = A->p * z;
        float xt = t > 0.0 ? (float)(m + log(t) - 0x1p-10) : -INFINITY;
        double *cand = A->cand;
        Py_ssize_t kept = 0;
        for (j = 0; j < c; j += 8) {
            Py_ssize_t w = c - j < 8 ? c - j : 8;
            if (w == 8) {
                v8i ge = ld8(x, j, DT) >= xt;
                v4u g2 = (v4u)__builtin_shufflevector(ge, ge, 0, 1, 2, 3)
                         | (v4u)__builtin_shufflevector(ge, ge, 4, 5, 6, 7);
                if (!(g2[0] | g2[1] | g2[2] | g2[3])) continue;
            }
            for (Py_ssize_t i = j; i < j + w; i++) {
                float v = (float)ld(x, i, DT);
                if (!(v >= xt)) continue;
                v8f one = {v - m};
                double ev = exp8(one)[0];
                cand[kept] = ev;
                kept += ev >= t;
            }
        }
        A->out[r] = top_sum_count(cand, kept, target);
    }
}

AI void topp_any(const topp_args *A, int dt) {
    switch (dt) {
    case DT_F16: topp32_t(A, DT_F16); break;
    case DT_BF16: topp32_t(A, DT_BF16); break;
    default: topp32_t(A, DT_F32); break;
    }
}

/* run-time dispatch by hand, one copy per instruction set (gcc 12's
 * target_clones hits an internal compiler error on this body) */
#if SMX_X86
__attribute__((target("arch=x86-64-v4")))
static void rows_v4(const diag_args *A, totals_t *T, int xdt, int ydt) { rows_any(A, T, xdt, ydt); }
__attribute__((target("arch=x86-64-v3")))
static void rows_v3(const diag_args *A, totals_t *T, int xdt, int ydt) { rows_any(A, T, xdt, ydt); }
__attribute__((target("arch=x86-64-v4")))
static void topp_v4(const topp_args *A, int dt) { topp_any(A, dt); }
__attribute__((target("arch=x86-64-v3")))
static void topp_v3(const topp_args *A, int dt) { topp_any(A, dt); }
#endif
static void rows_base(const diag_args *A, totals_t *T, int xdt, int ydt) { rows_any(A, T, xdt, ydt); }
static void topp_base(const topp_args *A, int dt) { topp_any(A, dt); }

typedef void (*rows_fn)(const diag_args *, totals_t *, int, int);
static rows_fn g_rows = rows_base;
typedef void (*topp_fn)(const topp_args *, int);
static topp_fn g_topp = topp_base;

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

/* top_p(x, dt, n, c, p, out_int64) -> None: each row's top-p size into out */
static PyObject *py_top_p(PyObject *self, PyObject *args) {
    PyObject *xo, *oo;
    int dt;
    Py_ssize_t n, c;
    double p;
    if (!PyArg_ParseTuple(args, "OinndO", &xo, &dt, &n, &c, &p, &oo)) return NULL;
    if (dt < 0 || dt > 2 || n < 0 || c < 1 || !(p > 0.0 && p <= 1.0)) {
        PyErr_SetString(PyExc_ValueError, "bad dtype code (16/32-bit floats only), shape or p");
        return NULL;
    }
    Py_buffer xb, ob;
    if (get_buf(xo, &xb, 0, n * c * ITEMSIZE[dt], "x") < 0) return NULL;
    if (get_buf(oo, &ob, 1, n * 8, "out") < 0) { PyBuffer_Release(&xb); return NULL; }
    double *scratch = (double *)malloc(sizeof(double) * (size_t)c);
    if (!scratch) {
        PyBuffer_Release(&xb); PyBuffer_Release(&ob);
        return PyErr_NoMemory();
    }
    topp_args A = {xb.buf, n, c, p, (int64_t *)ob.buf, scratch};
    Py_BEGIN_ALLOW_THREADS
    g_topp(&A, dt);
    Py_END_ALLOW_THREADS
    free(scratch);
    PyBuffer_Release(&xb); PyBuffer_Release(&ob);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"top_p", py_top_p, METH_VARARGS, "top_p(x, dt, n, c, p, out) -> None (top-p sizes of rows)"},
    {"summarize", py_summarize, METH_VARARGS,
     "summarize(x, xdt, y, ydt, n, c, kind, tiny, tol, counts, unclean) -> totals of clean rows"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_smx_diag",
                                    "One-pass diagnostics counts for smx.", -1, methods};

PyMODINIT_FUNC PyInit__smx_diag(void) {
#if SMX_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) { g_rows = rows_v4; g_topp = topp_v4; }
    else if (__builtin_cpu_supports("x86-64-v3")) { g_rows = rows_v3; g_topp = topp_v3; }
#endif
    return PyModule_Create(&moddef);
}
