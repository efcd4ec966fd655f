/* _smx_diag: the diagnostics panel's counts in one pass over a block of rows
 * (module smx_cli.core._smx_diag; caller smx_cli/analysis/diagnostics.py,
 * Accumulator._summarize).
 *
 * What smx_cli.analysis.diagnostics.Accumulator._add_clean counts with ~6 numpy
 * passes (row sums, zeros, subnormals, argmax, min, max), in one read of the
 * values and one of the logits, for the rows whose logits and values are all
 * finite ("clean" rows; the caller sends the rest to the careful numpy path).
 * It runs after the kernel, over what the kernel wrote: its cost is the read
 * of x and y (bench/native.py --diag puts it beside the kernel's).
 *
 *   - logits: only whether a row is all finite, in the row's own format (16-bit
 *     ones by their exponent bits, no conversion);
 *   - 16/32-bit results: compared in float32 (zero, subnormal, min, max,
 *     argmax), summed plainly in float64 (error <= C 2^-53 of the sum, far below
 *     the 4 eps >= 2^-21 the panel tolerates); log-probabilities sum a short
 *     exp (exp_small, relative error < 2^-31; AVX-512: _smx_x4exp.h's table
 *     exp, < 2^-46.99);
 *   - float64 results: TwoSum per lane (error ~2 u of the sum, the tolerance is
 *     4 eps = 8 u); log-probabilities sum exp(y) as hi + lo (exp_acc_v: ~1 u
 *     per term; AVX-512: x4_exp_lo, < 0.06 u), so |sum - 1| is accurate to a
 *     few 2^-53 where numpy's exp and split sum were used before;
 *   - argmax: the first index of the row maximum, as numpy.argmax (each lane
 *     keeps the index of its first maximum; the smallest of those holding the
 *     row maximum wins);
 *   - the top-p size of language-model rows (top_p, below).
 *
 * Three copies, picked at import (set_isa pins one for the tests): baseline and
 * AVX2 from the same vector-extension code (4 float64 / 8 float32 lanes), and an
 * AVX-512 one with intrinsics (16 float32 / 8 float64 lanes, masked tails).
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
    int xcheck;            /* 0: every row's logits are checked; 1: the caller knows no
                              logit is NaN or +inf (the kernel counted them) and y came
                              from x: a -inf logit then gives y = 0 (prob) or -inf
                              (logprob), so only rows of probabilities holding a 0 are
                              checked (log-probabilities never: -inf is not finite) */
} diag_args;

/* 8 float32 lanes (32 bytes: one AVX2 register, two SSE2 ones) for 16/32-bit
 * rows, 16 uint16 lanes for the finiteness of 16-bit logits */
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef uint16_t v8h __attribute__((vector_size(16)));
typedef uint16_t v16h __attribute__((vector_size(32)));

AI v8f sel8(v8i m, v8f a, v8f b) { return (v8f)((m & (v8i)a) | (~m & (v8i)b)); }

AI v8f ld8(const void *p, Py_ssize_t j, const int DT) {
    if (DT == DT_F32) { v8f f; memcpy(&f, (const float *)p + j, 32); return f; }
    v8h h;
    memcpy(&h, (const uint16_t *)p + j, 16);
    v8u u = __builtin_convertvector(h, v8u);
    if (DT == DT_BF16) return (v8f)(u << 16);
    /* float16 (exact): normals by rebiasing the exponent in the integer bits,
     * subnormals as their integer mantissa times 2^-24, inf / NaN by their bits.
     * (f16_to_f32's scaling of a float32 subnormal by 2^112 is exact too, but a
     * subnormal operand costs a microcode assist per vector: softmax outputs of
     * wide rows are mostly float16 subnormals) */
    v8u sign = (u & 0x8000u) << 16, a = u & 0x7fffu;
    v8u normal = (a << 13) + 0x38000000u;
    v8f tiny = __builtin_convertvector((v8i)a, v8f) * 0x1p-24f;
    v8u special = 0x7f800000u | (a & 0x3ffu) << 13;
    v8u big = (v8u)(a >= 0x7c00u), small = (v8u)(a < 0x400u);
    v8u bits = (special & big) | ((v8u)tiny & small) | (normal & ~(big | small));
    return (v8f)(bits | sign);
}

AI v4d lo4(v8f v) { return __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3), v4d); }
AI v4d hi4(v8f v) { return __builtin_convertvector(__builtin_shufflevector(v, v, 4, 5, 6, 7), v4d); }

/* all finite: in the row's own format. 16-bit: no entry has an all-ones
 * exponent field (inf or NaN); 32/64-bit: a sum of (v - v) is NaN exactly
 * when some v is NaN or +-inf */
AI int finite_row(const void *p, Py_ssize_t c, const int DT) {
    Py_ssize_t j = 0;
    if (DT == DT_F16 || DT == DT_BF16) {
        const uint16_t e = DT == DT_F16 ? 0x7c00u : 0x7f80u;
        const uint16_t *h = (const uint16_t *)p;
        v16h bad = {0};
        for (; j + 16 <= c; j += 16) {
            v16h u; memcpy(&u, h + j, 32);
            bad |= (v16h)((u & e) == e);
        }
        int b = 0;
        for (; j < c; j++) b |= (h[j] & e) == e;
        for (int l = 0; l < 16; l++) b |= bad[l] != 0;
        return !b;
    }
    if (DT == DT_F32) {
        v8f acc = {0};
        for (; j + 8 <= c; j += 8) { v8f v = ld8(p, j, DT); acc += v - v; }
        float t = 0.0f;
        for (; j < c; j++) { float v = ((const float *)p)[j]; t += v - v; }
        for (int l = 0; l < 8; l++) t += acc[l];
        return t == 0.0f;
    }
    v4d acc = splat(0.0);
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
 * >= 2^-21) and for the max |sum - 1| the panel prints (3 significant digits);
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

/* exp(v) of float64 log-probabilities as an unevaluated sum hi + lo, for the
 * |sum - 1| check at 4 eps of float64: Cody-Waite with fdlibm's ln2 split
 * (ln2_hi has 32 bits: k ln2_hi is exact), expm1(r) = r + r^2 q(r) to r^13/13!
 * (truncation < 2^-57 relative for |r| <= ln2/2), then 1 + expm1(r) split by
 * Fast2Sum (|expm1(r)| < 1) so that its rounding is kept in lo. Relative error
 * of hi + lo: the rounding of r (<= 2^-54 |r| absolute) and of expm1(r) (a few
 * 2^-53 |expm1(r)| ... ~2^-54), well under one unit of the sum's last place;
 * below -708 both are 0 (such terms are < 2^-1021: nothing to |sum - 1|) */
AI void exp_acc_v(v4d v, v4d *hi, v4d *lo) {
    v4d vc = sel(v < -708.0, splat(-708.0), v);
    vc = sel(vc > 709.0, splat(709.0), vc);
    v4d kd = vc * 0x1.71547652b82fep0 + 0x1.8p52;
    v4l ki = (v4l)kd;
    kd -= 0x1.8p52;
    v4d r = (vc - kd * 0x1.62e42feep-1) - kd * 0x1.a39ef35793c76p-33;
    v4d r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    /* q(r) = 1/2! + r/3! + ... + r^11/13!, by Estrin's scheme */
    v4d a0 = r * (1.0 / 6.0) + 1.0 / 2.0, a1 = r * (1.0 / 120.0) + 1.0 / 24.0;
    v4d a2 = r * (1.0 / 5040.0) + 1.0 / 720.0, a3 = r * (1.0 / 362880.0) + 1.0 / 40320.0;
    v4d a4 = r * (1.0 / 39916800.0) + 1.0 / 3628800.0;
    v4d a5 = r * (1.0 / 6227020800.0) + 1.0 / 479001600.0;
    v4d q = (a0 + a1 * r2) + (a2 + a3 * r2) * r4 + (a4 + a5 * r2) * r8;
    v4d m = r + r2 * q;                      /* expm1(r) */
    v4d h = 1.0 + m;
    v4d l = (1.0 - h) + m;                   /* Fast2Sum: exact, |m| < 1 */
    v4l bits = (ki - (int64_t)0x4338000000000000ll + 1023) << 52;
    v4l tiny = v < -708.0;
    *hi = sel(tiny, splat(0.0), h * (v4d)bits);
    *lo = sel(tiny, splat(0.0), l * (v4d)bits);
}

AI void exp_acc(double v, double *hi, double *lo) {
    v4d h, l;
    exp_acc_v(splat(v), &h, &l);
    *hi = h[0];
    *lo = l[0];
}

/* the row's counts, added to the totals once the row is known clean */
typedef struct {
    int64_t zeros, sub, arg;
    double hi, lo, mn, mx;
} row_t;

AI void row_done(const diag_args *A, totals_t *T, Py_ssize_t r, const row_t *R, int sum) {
    A->unclean[r] = 0;
    T->clean_rows++;
    T->zeros += R->zeros;
    T->subnormal += R->sub;
    if (sum) {
        double err = fabs((R->hi - 1.0) + R->lo);   /* hi - 1 is exact near 1 (Sterbenz) */
        T->off += err > A->tol;
        T->max_err = err > T->max_err ? err : T->max_err;
    }
    T->vmin = R->mn < T->vmin ? R->mn : T->vmin;
    T->vmax = R->mx > T->vmax ? R->mx : T->vmax;
    A->counts[R->arg >= 0 && R->arg < A->c ? R->arg : 0]++;
}

/* the smallest float32 t with (v < t) == (v < L) for every float32 v: the
 * numpy count compares float32 values with the float64 log of tiny */
static float f32_threshold(double L) {
    float t = (float)L;
    if ((double)t < L) t = nextafterf(t, INFINITY);
    return t;
}

/* 16/32-bit results: compared in float32 (they are float32 numbers) on 8
 * lanes; sums in float64, plainly: C terms of <= 2^-24 relative rounding each
 * err by <= C 2^-53 of the sum, far below the tolerance 4 eps >= 2^-21.
 * Rows are read in segments of < 2^30 entries so lane counts and indices fit
 * 32 bits. KIND 0 probabilities, 1 log-probabilities (exp_small per entry). */
AI void rows_narrow(const diag_args *A, totals_t *T0, const int XDT, const int YDT, const int KIND) {
    totals_t L = *T0, *T = &L;   /* the totals in registers, not through a pointer */
    const Py_ssize_t c = A->c, SEG = (Py_ssize_t)1 << 30;
    const size_t xs = (size_t)ITEMSIZE[XDT], ys = (size_t)ITEMSIZE[YDT];
    const float tiny = KIND == 0 ? (float)A->tiny : f32_threshold(A->tiny);
    for (Py_ssize_t r = 0; r < A->n; r++) {
        const char *x = (const char *)A->x + (size_t)r * c * xs;
        const char *y = (const char *)A->y + (size_t)r * c * ys;
        A->unclean[r] = 1;
        if (!A->xcheck && !finite_row(x, c, XDT)) continue;
        row_t R = {0, 0, -1, 0.0, 0.0, INFINITY, -INFINITY};
        int bad = 0;
        for (Py_ssize_t s0 = 0; s0 < c && !bad; s0 += SEG) {
            const Py_ssize_t s1 = c - s0 < SEG ? c : s0 + SEG;
            v4d sh = splat(0.0);
            v8f fin = {0}, mn = (v8f){0} + INFINITY;
            v8f mx = -mn;
            v8i z = {0}, sub = {0};          /* comparisons give -1 per true lane */
            v8i at = {0, 1, 2, 3, 4, 5, 6, 7}, arg = at;
            Py_ssize_t j = s0;
            for (; j + 8 <= s1; j += 8) {
                v8f v = ld8(y, j, YDT);
                fin += v - v;
                if (KIND == 0) {
                    v8i zero = v == 0.0f;
                    z += zero;
                    sub += (v < tiny) & ~zero;
                    sh += lo4(v) + hi4(v);
                } else {
                    sub += v < tiny;
                    sh += exp_small_v(lo4(v)) + exp_small_v(hi4(v));
                }
                mn = sel8(v < mn, v, mn);
                v8i up = v > mx;
                mx = sel8(up, v, mx);
                arg = (up & at) | (~up & arg);
                at += 8;
            }
            double th = 0.0;
            float tfin = 0.0f, tmn = INFINITY, tmx = -INFINITY;
            int64_t targ = -1;
            for (; j < s1; j++) {   /* the last entries, one at a time */
                float v = (float)ld(y, j, YDT);
                tfin += v - v;
                if (KIND == 0) {
                    R.zeros += v == 0.0f;
                    R.sub += (v < tiny) & (v != 0.0f);
                    th += v;
                } else {
                    R.sub += v < tiny;
                    th += exp_small(v);
                }
                tmn = v < tmn ? v : tmn;
                targ = v > tmx ? j : targ;
                tmx = v > tmx ? v : tmx;
            }
            for (int l = 0; l < 8; l++) tfin += fin[l];
            if (tfin != 0.0f) { bad = 1; break; }   /* NaN or inf in y: not a clean row */
            for (int l = 0; l < 4; l++) th += sh[l];
            R.hi += th;
            float smx = -INFINITY;
            for (int l = 0; l < 8; l++) {
                R.zeros -= z[l];
                R.sub -= sub[l];
                tmn = mn[l] < tmn ? mn[l] : tmn;
                smx = mx[l] > smx ? mx[l] : smx;
            }
            smx = tmx > smx ? tmx : smx;
            /* the segment's first maximum: the smallest index holding it */
            int64_t k = tmx == smx ? targ : s1;
            for (int l = 0; l < 8; l++)
                if (mx[l] == smx && s0 + arg[l] < k) k = s0 + arg[l];
            R.mn = tmn < R.mn ? tmn : R.mn;
            if (smx > R.mx) { R.mx = smx; R.arg = k; }   /* ties: the earlier segment's */
        }
        if (bad || (A->xcheck && R.zeros && !finite_row(x, c, XDT))) continue;
        row_done(A, T, r, &R, 1);
    }
    *T0 = L;
}

/* float64 results on 4 float64 lanes, the sum with TwoSum per lane (error ~2 u
 * of the sum, far below the tolerance 4 eps); log-probabilities sum exp_acc */
AI void rows_wide(const diag_args *A, totals_t *T0, const int XDT, const int KIND) {
    totals_t L = *T0, *T = &L;   /* the totals in registers, not through a pointer */
    const Py_ssize_t c = A->c;
    const size_t xs = (size_t)ITEMSIZE[XDT];
    const double tiny = A->tiny;
    for (Py_ssize_t r = 0; r < A->n; r++) {
        const char *x = (const char *)A->x + (size_t)r * c * xs;
        const double *y = (const double *)A->y + (size_t)r * c;
        A->unclean[r] = 1;
        if (!A->xcheck && !finite_row(x, c, XDT)) continue;
        v4d sh = splat(0.0), sl = splat(0.0), mn = splat(INFINITY), mx = splat(-INFINITY);
        v4d fin = splat(0.0);
        v4l z = {0}, sub = {0};
        v4l at = {0, 1, 2, 3}, arg = {0, 1, 2, 3}; /* each lane's first maximum */
        Py_ssize_t j = 0;
        for (; j + LANES <= c; j += LANES) {
            v4d v; memcpy(&v, y + j, 32);
            fin += v - v;
            v4d p, pl = splat(0.0);
            if (KIND == 0) {
                v4l zero = v == 0.0;
                z += zero;
                sub += (v < tiny) & ~zero;
                p = v;
            } else {
                sub += v < tiny;
                exp_acc_v(v, &p, &pl);
            }
            v4d t = sh + p, bv = t - sh;
            sl += ((sh - (t - bv)) + (p - bv)) + pl; /* TwoSum error */
            sh = t;
            mn = sel(v < mn, v, mn);
            v4l up = v > mx;
            mx = sel(up, v, mx);
            arg = (up & at) | (~up & arg);
            at += LANES;
        }
        row_t R = {0, 0, -1, 0.0, 0.0, INFINITY, -INFINITY};
        double tfin = 0.0;
        for (; j < c; j++) {   /* the last c % 4 entries, one at a time */
            double v = y[j], p, pl = 0.0;
            tfin += v - v;
            if (KIND == 0) {
                R.zeros += v == 0.0;
                R.sub += (v < tiny) & (v != 0.0);
                p = v;
            } else {
                R.sub += v < tiny;
                exp_acc(v, &p, &pl);
            }
            double t = R.hi + p, bv = t - R.hi;
            R.lo += ((R.hi - (t - bv)) + (p - bv)) + pl;
            R.hi = t;
            R.mn = v < R.mn ? v : R.mn;
            R.arg = v > R.mx ? j : R.arg;
            R.mx = v > R.mx ? v : R.mx;
        }
        for (int l = 0; l < LANES; l++) tfin += fin[l];
        if (tfin != 0.0) continue;   /* NaN or inf in y: not a clean row */
        double tmx = R.mx, rmax = R.mx;
        for (int l = 0; l < LANES; l++) {
            double s = R.hi + sh[l], bv = s - R.hi;
            R.lo += ((R.hi - (s - bv)) + (sh[l] - bv)) + sl[l];
            R.hi = s;
            R.mn = mn[l] < R.mn ? mn[l] : R.mn;
            rmax = mx[l] > rmax ? mx[l] : rmax;
            R.zeros -= z[l];
            R.sub -= sub[l];
        }
        /* the first maximum: the smallest index holding rmax */
        int64_t k = rmax == tmx ? R.arg : c;
        for (int l = 0; l < LANES; l++)
            if (c >= LANES && mx[l] == rmax && arg[l] < k) k = arg[l];
        R.arg = k;
        R.mx = rmax;
        if (A->xcheck && R.zeros && !finite_row(x, c, XDT)) continue;
        row_done(A, T, r, &R, 1);
    }
    *T0 = L;
}

AI void rows_k(const diag_args *A, totals_t *T, const int XDT, const int YDT) {
    if (YDT == DT_F64) {
        if (A->kind == 0) rows_wide(A, T, XDT, 0);
        else rows_wide(A, T, XDT, 1);
    } else if (A->kind == 0) {
        rows_narrow(A, T, XDT, YDT, 0);
    } else {
        rows_narrow(A, T, XDT, YDT, 1);
    }
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
/* the AVX-512 copy of the row pass (x86-64-v4 only): 16 float32 lanes for
 * 16/32-bit results (masked loads also take the row's last c % 16 entries),
 * 8 float64 lanes for float64 ones, and _smx_x4exp.h's table exp: of degree 5
 * (error < 2^-46.99 relative) for 16/32-bit log-probabilities, of degree 7
 * with the rounding of its last step and of its table kept apart (x4_exp_lo)
 * for float64 ones */
#if SMX_X86
#ifndef SMX_V4
#define SMX_V4 __attribute__((target("arch=x86-64-v4,prefer-vector-width=512")))
#endif
#include "_smx_x4exp.h"

/* exp(d) = hi + lo on the lanes of ok (-708 <= d <= 0), 0 elsewhere: x4_exp_deg
 * of degree 7, with lo = the rounding error of its fma t + t p (exact by
 * Sterbenz and one fma) plus TLO (1 + p), TLO = X4_EXP16_LO (2^(j/16) - T[j]):
 * hi + lo errs by r's error and p's truncation and roundings, <= 0.06 u */
AI4 __m512d x4_exp_lo(__m512d d, __mmask8 ok, __m512d *lo) {
    const __m512d T0 = _mm512_loadu_pd(X4_EXP16_HI), T1 = _mm512_loadu_pd(X4_EXP16_HI + 8);
    const __m512d L0 = _mm512_loadu_pd(X4_EXP16_LO), L1 = _mm512_loadu_pd(X4_EXP16_LO + 8);
    const __m512d sh = _mm512_set1_pd(0x1.8p48);
    __m512d kd = _mm512_fmadd_pd(d, _mm512_set1_pd(0x1.71547652b82fep+0), sh);
    __m512i ki = _mm512_castpd_si512(kd);
    kd = _mm512_sub_pd(kd, sh);
    __m512d r = _mm512_fnmadd_pd(kd, _mm512_set1_pd(0x1.62e42fefa4000p-1), d);
    r = _mm512_fnmadd_pd(kd, _mm512_set1_pd(-0x1.8432a1b0e2634p-43), r);
    __m512d r2 = _mm512_mul_pd(r, r);
    __m512d q = _mm512_fmadd_pd(_mm512_set1_pd(1.0 / 5040.0), r, _mm512_set1_pd(1.0 / 720.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 120.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 24.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 6.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(0.5));
    __m512d p = _mm512_fmadd_pd(r2, q, r);
    __m512d t = _mm512_permutex2var_pd(T0, ki, T1);
    __m512d tl = _mm512_permutex2var_pd(L0, ki, L1);
    __m512d e = _mm512_maskz_fmadd_pd(ok, t, p, t);
    __m512d err = _mm512_fmadd_pd(t, p, _mm512_sub_pd(t, e));
    __m512d l = _mm512_maskz_add_pd(ok, err, _mm512_fmadd_pd(tl, p, tl));
    *lo = _mm512_scalef_pd(l, kd);
    return _mm512_scalef_pd(e, kd);
}

AI4 __m512 x4_ld16(const void *p, Py_ssize_t j, __mmask16 m, const int DT) {
    if (DT == DT_F32) return _mm512_maskz_loadu_ps(m, (const float *)p + j);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)p + j);
    if (DT == DT_BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

/* a 16/32-bit row's pass on 16 lanes; 0 if some value is NaN or inf. Lane
 * indices in 32 bits: rows of c < 2^31 only. */
AI4 int x4_row_narrow(const void *y, Py_ssize_t c, const int YDT, const int KIND, float tinyf,
                      row_t *R) {
    const __m512 zero = _mm512_setzero_ps(), tiny = _mm512_set1_ps(tinyf);
    const __m512d dzero = _mm512_setzero_pd();
    __m512 mn = _mm512_set1_ps(INFINITY), mx = _mm512_set1_ps(-INFINITY);
    __m512i at = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i arg = at;
    const __m512i sixteen = _mm512_set1_epi32(16);
    __m512d s = dzero;
    double xs = 0.0;
    int64_t zeros = 0, sub = 0;
    __mmask16 bad = 0;
    for (Py_ssize_t j = 0; j < c; j += 16) {
        __mmask16 m = c - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (c - j)) - 1u);
        __m512 v = x4_ld16(y, j, m, YDT);
        bad |= m & ~_mm512_cmp_ps_mask(_mm512_sub_ps(v, v), zero, _CMP_EQ_OQ);
        __m512d dl = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        __m512d dh = _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1));
        if (KIND == 0) {
            __mmask16 zk = _mm512_mask_cmp_ps_mask(m, v, zero, _CMP_EQ_OQ);
            __mmask16 sk = _mm512_mask_cmp_ps_mask(m & ~zk, v, tiny, _CMP_LT_OQ);
            zeros += __builtin_popcount(zk);
            sub += __builtin_popcount(sk);
            s = _mm512_add_pd(s, _mm512_add_pd(dl, dh));   /* masked-off lanes are 0 */
        } else {
            sub += __builtin_popcount(_mm512_mask_cmp_ps_mask(m, v, tiny, _CMP_LT_OQ));
            __mmask16 pos = _mm512_mask_cmp_ps_mask(m, v, zero, _CMP_GT_OQ);
            __mmask16 ok = _mm512_mask_cmp_ps_mask(m & ~pos, v, _mm512_set1_ps(-708.0f),
                                                   _CMP_GE_OQ);
            s = _mm512_add_pd(s, _mm512_add_pd(x4_exp_deg(dl, (__mmask8)ok, 5),
                                               x4_exp_deg(dh, (__mmask8)(ok >> 8), 5)));
            if (pos) {   /* log-probabilities above 0 (not from a softmax): one at a time */
                float buf[16];
                _mm512_storeu_ps(buf, v);
                for (int l = 0; l < 16; l++)
                    if (pos >> l & 1) xs += exp_small(buf[l]);
            }
        }
        mn = _mm512_mask_min_ps(mn, m, mn, v);
        __mmask16 up = _mm512_mask_cmp_ps_mask(m, v, mx, _CMP_GT_OQ);
        mx = _mm512_mask_mov_ps(mx, up, v);
        arg = _mm512_mask_mov_epi32(arg, up, at);
        at = _mm512_add_epi32(at, sixteen);
    }
    if (bad) return 0;
    float rmax = _mm512_reduce_max_ps(mx);
    __mmask16 top = _mm512_cmp_ps_mask(mx, _mm512_set1_ps(rmax), _CMP_EQ_OQ);
    R->zeros = zeros;
    R->sub = sub;
    R->hi = _mm512_reduce_add_pd(s) + xs;
    R->lo = 0.0;
    R->mn = _mm512_reduce_min_ps(mn);
    R->mx = rmax;
    R->arg = _mm512_mask_reduce_min_epi32(top, arg);   /* the first maximum */
    return 1;
}

/* a float64 row's pass on 8 lanes, the sum by TwoSum per lane; 0 if some
 * value is NaN or inf */
AI4 int x4_row_wide(const double *y, Py_ssize_t c, const int KIND, double tinyd, row_t *R) {
    const __m512d zero = _mm512_setzero_pd(), tiny = _mm512_set1_pd(tinyd);
    __m512d mn = _mm512_set1_pd(INFINITY), mx = _mm512_set1_pd(-INFINITY);
    __m512i at = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7), arg = at;
    const __m512i eight = _mm512_set1_epi64(8);
    __m512d sh = zero, sl = zero;
    double xh = 0.0, xl = 0.0;
    int64_t zeros = 0, sub = 0;
    __mmask8 bad = 0;
    for (Py_ssize_t j = 0; j < c; j += 8) {
        __mmask8 m = c - j >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (c - j)) - 1u);
        __m512d v = _mm512_maskz_loadu_pd(m, y + j);
        bad |= m & ~_mm512_cmp_pd_mask(_mm512_sub_pd(v, v), zero, _CMP_EQ_OQ);
        if (KIND == 0) {
            __mmask8 zk = _mm512_mask_cmp_pd_mask(m, v, zero, _CMP_EQ_OQ);
            zeros += __builtin_popcount(zk);
            sub += __builtin_popcount(_mm512_mask_cmp_pd_mask(m & ~zk, v, tiny, _CMP_LT_OQ));
            x4_two_sum(&sh, &sl, v);
        } else {
            sub += __builtin_popcount(_mm512_mask_cmp_pd_mask(m, v, tiny, _CMP_LT_OQ));
            __mmask8 pos = _mm512_mask_cmp_pd_mask(m, v, zero, _CMP_GT_OQ);
            __mmask8 ok = _mm512_mask_cmp_pd_mask(m & ~pos, v, _mm512_set1_pd(-708.0), _CMP_GE_OQ);
            __m512d el;
            __m512d e = x4_exp_lo(v, ok, &el);
            x4_two_sum(&sh, &sl, e);
            sl = _mm512_add_pd(sl, el);
            if (pos) {   /* log-probabilities above 0 (not from a softmax): one at a time */
                double buf[8];
                _mm512_storeu_pd(buf, v);
                for (int l = 0; l < 8; l++) {
                    if (!(pos >> l & 1)) continue;
                    double h, lo2;
                    exp_acc(buf[l], &h, &lo2);
                    double t = xh + h, bv = t - xh;
                    xl += ((xh - (t - bv)) + (h - bv)) + lo2;
                    xh = t;
                }
            }
        }
        mn = _mm512_mask_min_pd(mn, m, mn, v);
        __mmask8 up = _mm512_mask_cmp_pd_mask(m, v, mx, _CMP_GT_OQ);
        mx = _mm512_mask_mov_pd(mx, up, v);
        arg = _mm512_mask_mov_epi64(arg, up, at);
        at = _mm512_add_epi64(at, eight);
    }
    if (bad) return 0;
    /* the lanes' (sh, sl) folded by TwoSum in three steps (halves, quarters,
     * pairs: every lane ends with the total), then the rare scalar part */
    __m512d h2 = _mm512_shuffle_f64x2(sh, sh, 0x4e), l2 = _mm512_shuffle_f64x2(sl, sl, 0x4e);
    sl = _mm512_add_pd(sl, l2);
    x4_two_sum(&sh, &sl, h2);
    h2 = _mm512_shuffle_f64x2(sh, sh, 0xb1);
    l2 = _mm512_shuffle_f64x2(sl, sl, 0xb1);
    sl = _mm512_add_pd(sl, l2);
    x4_two_sum(&sh, &sl, h2);
    h2 = _mm512_permute_pd(sh, 0x55);
    l2 = _mm512_permute_pd(sl, 0x55);
    sl = _mm512_add_pd(sl, l2);
    x4_two_sum(&sh, &sl, h2);
    double hi = _mm512_cvtsd_f64(sh), lo = _mm512_cvtsd_f64(sl) + xl;
    if (xh != 0.0) {
        double t = hi + xh, bv = t - hi;
        lo += (hi - (t - bv)) + (xh - bv);
        hi = t;
    }
    double rmax = _mm512_reduce_max_pd(mx);
    __mmask8 top = _mm512_cmp_pd_mask(mx, _mm512_set1_pd(rmax), _CMP_EQ_OQ);
    R->zeros = zeros;
    R->sub = sub;
    R->hi = hi;
    R->lo = lo;
    R->mn = _mm512_reduce_min_pd(mn);
    R->mx = rmax;
    R->arg = _mm512_mask_reduce_min_epi64(top, arg);
    return 1;
}

AI4 void rows_x4(const diag_args *A, totals_t *T0, const int XDT, const int YDT, const int KIND) {
    totals_t L = *T0, *T = &L;   /* the totals in registers, not through a pointer */
    const Py_ssize_t c = A->c;
    const size_t xs = (size_t)ITEMSIZE[XDT], ys = (size_t)ITEMSIZE[YDT];
    const float tinyf = KIND == 0 ? (float)A->tiny : f32_threshold(A->tiny);
    for (Py_ssize_t r = 0; r < A->n; r++) {
        const char *x = (const char *)A->x + (size_t)r * c * xs;
        const char *y = (const char *)A->y + (size_t)r * c * ys;
        A->unclean[r] = 1;
        if (!A->xcheck && !finite_row(x, c, XDT)) continue;
        row_t R;
        int ok = YDT == DT_F64 ? x4_row_wide((const double *)y, c, KIND, A->tiny, &R)
                               : x4_row_narrow(y, c, YDT, KIND, tinyf, &R);
        if (ok && !(A->xcheck && R.zeros && !finite_row(x, c, XDT))) row_done(A, T, r, &R, 1);
    }
    *T0 = L;
}

AI4 void rows_x4_k(const diag_args *A, totals_t *T, const int XDT, const int YDT) {
    if (A->c >= ((Py_ssize_t)1 << 30)) rows_k(A, T, XDT, YDT);   /* 32-bit lane indices */
    else if (A->kind == 0) rows_x4(A, T, XDT, YDT, 0);
    else rows_x4(A, T, XDT, YDT, 1);
}

#define YSWITCH4(XDT)                                               \
    switch (ydt) {                                                  \
    case DT_F16: rows_x4_k(A, T, XDT, DT_F16); break;               \
    case DT_BF16: rows_x4_k(A, T, XDT, DT_BF16); break;             \
    case DT_F32: rows_x4_k(A, T, XDT, DT_F32); break;               \
    default: rows_x4_k(A, T, XDT, DT_F64); break;                   \
    }

AI4 void rows_any_x4(const diag_args *A, totals_t *T, int xdt, int ydt) {
    switch (xdt) {
    case DT_F16: YSWITCH4(DT_F16) break;
    case DT_BF16: YSWITCH4(DT_BF16) break;
    case DT_F32: YSWITCH4(DT_F32) break;
    default: YSWITCH4(DT_F64) break;
    }
}
#endif

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
SMX_V4
static void rows_v4(const diag_args *A, totals_t *T, int xdt, int ydt) { rows_any_x4(A, T, xdt, ydt); }
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

/* summarize(x, xdt, y, ydt, n, c, kind, tiny, tol, counts, unclean[, xcheck])
 *   -> (zeros, subnormal, off, max_err, vmin, vmax, clean_rows) over the clean rows
 *   (xcheck 1: only rows of probabilities holding a 0 have their logits read;
 *   see diag_args) */
static PyObject *py_summarize(PyObject *self, PyObject *args) {
    PyObject *xo, *yo, *co, *uo;
    int xdt, ydt, kind, xcheck = 0;
    Py_ssize_t n, c;
    double tiny, tol;
    if (!PyArg_ParseTuple(args, "OiOinniddOO|i", &xo, &xdt, &yo, &ydt, &n, &c, &kind, &tiny, &tol,
                          &co, &uo, &xcheck))
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
    diag_args A = {xb.buf, yb.buf, n, c, kind, tiny, tol, (int64_t *)cb.buf, (uint8_t *)ub.buf,
                   xcheck};
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

/* isa() -> the variant in use; set_isa(name) -> the previous one (tests pin
 * "baseline", "avx2" or "avx512" to check each copy; only ones this CPU runs) */
static const char *ISA_NAMES[3] = {"baseline", "avx2", "avx512"};
static int g_isa = 0, g_isa_max = 0;

static void use_isa(int k) {
    g_isa = k;
    g_rows = rows_base;
    g_topp = topp_base;
#if SMX_X86
    if (k == 2) { g_rows = rows_v4; g_topp = topp_v4; }
    else if (k == 1) { g_rows = rows_v3; g_topp = topp_v3; }
#endif
}

static PyObject *py_isa(PyObject *self, PyObject *args) {
    return PyUnicode_FromString(ISA_NAMES[g_isa]);
}

static PyObject *py_set_isa(PyObject *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    for (int k = 0; k <= g_isa_max; k++) {
        if (strcmp(name, ISA_NAMES[k]) == 0) {
            const char *old = ISA_NAMES[g_isa];
            use_isa(k);
            return PyUnicode_FromString(old);
        }
    }
    PyErr_Format(PyExc_ValueError, "isa %s is not available on this CPU", name);
    return NULL;
}

static PyMethodDef methods[] = {
    {"isa", py_isa, METH_NOARGS, "isa() -> the CPU variant in use"},
    {"set_isa", py_set_isa, METH_VARARGS, "set_isa(name) -> the previous variant (for tests)"},
    {"top_p", py_top_p, METH_VARARGS, "top_p(x, dt, n, c, p, out) -> None (top-p sizes of rows)"},
    {"summarize", py_summarize, METH_VARARGS,
     "summarize(x, xdt, y, ydt, n, c, kind, tiny, tol, counts, unclean[, xcheck]) -> totals of "
     "clean rows"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_smx_diag",
                                    "One-pass diagnostics counts for smx.", -1, methods};

PyMODINIT_FUNC PyInit__smx_diag(void) {
#if SMX_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) g_isa_max = 2;
    else if (__builtin_cpu_supports("x86-64-v3")) g_isa_max = 1;
#endif
    use_isa(g_isa_max);
    return PyModule_Create(&moddef);
}
