/* _smx_lowp.h: the pieces of the 16/32-bit softmax / log-softmax path that
 * make it fast: a shorter exp (exp1w), row maxima on the input's own bits,
 * float16 loads and stores through F16C on the AVX2/AVX-512 variants, and the
 * blocked exp sum built from them (lowp_exp_sum_w), used by the softmax
 * kernels (_smx_softmax.h), the VJPs (_smx_vjp.h) and the online kernel
 * (_smx_fast.c); exp1 / row_max in _smx_base.h stay for the cross-entropy.
 * On the AVX-512 variant the softmax / log-softmax rows run lowp_x4_row (at
 * the end: intrinsics, the exp of _smx_x4exp.h, the sum kept in registers).
 * Included once per module (_smx_softmax.h, _smx_fast.c); not a public header. */
#ifndef SMX_LOWP_H
#define SMX_LOWP_H

#if SMX_X86
#include <immintrin.h>
#endif

/* ------------------------------------------------------------------------ */
/* exp as one float64, for the 2^-44 budget of the 16/32-bit path            */

/* exp(r) ~ 1 + r + r^2 Q(r), Q = sum_{n=2..10} EXPW_Cn r^(n-2): minimax in the
 * relative error of exp on |r| <= ln2/2 + 2^-20, fitted and checked by
 * bench/fit_exp1.py (Remez exchange at 60 digits; max relative error of the
 * float64 coefficients 2^-50.79; tests/test_native_lowp.py re-checks these
 * very numbers). Degree 9 gives only 2^-42.8. */
#define EXPW_C2 0x1.fffffffffffd8p-2
#define EXPW_C3 0x1.5555555550636p-3
#define EXPW_C4 0x1.555555555c718p-5
#define EXPW_C5 0x1.11111126ab412p-7
#define EXPW_C6 0x1.6c16c1599e8b7p-10
#define EXPW_C7 0x1.a019889394424p-13
#define EXPW_C8 0x1.a01a0c448aae0p-16
#define EXPW_C9 0x1.72ef29b7f7dafp-19
#define EXPW_C10 0x1.284659ea37278p-22

/* exp(q) for q <= 0 as ONE float64, 0 for q < -708 and q = -inf (exp1's
 * reduction: k = rint(q log2e), |k| <= 1022, r = (q - k LN2HI) - k LN2LO with
 * the first step exact, |error of r| <= 2^-54). Relative error: the
 * polynomial's approximation 2^-50.79, r's rounding 2^-54, the evaluation
 * (r^2 Q < 0.07: Q's roundings a few u of it, the r + r^2 Q rounding 0.5 u of
 * <= 0.41, the final 1 + t 0.5 u, divided by exp(r) >= 0.707: < 1.7 u), so
 * <= 2^-50.79 + 2^-54 + 1.7 * 2^-53 < 2^-50.2, with or without FMA; the
 * budget below (before lowp_exp_sum_w) uses 2^-50. 2 multiplications and 9
 * FMAs for the polynomial where exp1 takes 3 and 12. */
AI double exp1w(double q, const int USE_FMA) {
    double qc = q < -708.0 ? -708.0 : q;
    double kd = FMA_(qc, LOG2E, SHIFT, USE_FMA);  /* rint(q log2e), up to ties */
    uint64_t ki = asu64(kd);
    kd -= SHIFT;
    double r = FMA_(-kd, LN2HI, qc, USE_FMA);     /* exact either way */
    r = FMA_(-kd, LN2LO, r, USE_FMA);
    double r2 = r * r, r4 = r2 * r2;
    /* Estrin's scheme: Q = (C2 + C3 r) + r^2 (C4 + C5 r) + r^4 ((C6 + C7 r)
     * + r^2 (C8 + C9 r) + r^4 C10) */
    double c23 = FMA_(EXPW_C3, r, EXPW_C2, USE_FMA);
    double c45 = FMA_(EXPW_C5, r, EXPW_C4, USE_FMA);
    double c67 = FMA_(EXPW_C7, r, EXPW_C6, USE_FMA);
    double c89 = FMA_(EXPW_C9, r, EXPW_C8, USE_FMA);
    double c25 = FMA_(c45, r2, c23, USE_FMA);
    double c69 = FMA_(c89, r2, c67, USE_FMA);
    double c6a = FMA_(EXPW_C10, r4, c69, USE_FMA);
    double Q = FMA_(c6a, r4, c25, USE_FMA);
    double p = 1.0 + FMA_(r2, Q, r, USE_FMA);
    double s = asf64((ki - asu64(SHIFT) + 1023) << 52);
    return q < -708.0 ? 0.0 : p * s;
}

/* ------------------------------------------------------------------------ */
/* row maxima on the input's own bits                                        */

/* max of a 16/32-bit row and whether it has a NaN, on integer keys of the
 * format's own width (the bits with the magnitude flipped for negative
 * numbers, as order_key): 16 (float32) or 32 (float16, bfloat16) lanes per
 * 512-bit vector where row_max widens each entry to float64 first. Same
 * result as row_max (max(-0, +0) = +0); float64 rows go to row_max. */
AI double row_max_w(const void *x, Py_ssize_t C, int *has_nan, const int DT) {
    if (DT == DT_F32) {
        const int32_t *p = (const int32_t *)x;
        int32_t km = INT32_MIN, nanf = 0;
        for (Py_ssize_t j = 0; j < C; j++) {
            int32_t b = p[j];
            int32_t key = b ^ (int32_t)((uint32_t)(b >> 31) >> 1);
            km = key > km ? key : km;
            nanf |= (b & 0x7fffffff) > 0x7f800000;
        }
        *has_nan = nanf != 0;
        if (C == 0) return -INFINITY;
        int32_t b = km ^ (int32_t)((uint32_t)(km >> 31) >> 1);
        float f;
        memcpy(&f, &b, 4);
        return (double)f;
    }
    if (DT == DT_F16 || DT == DT_BF16) {
        const int16_t *p = (const int16_t *)x;
        const int16_t lim = DT == DT_F16 ? 0x7c00 : 0x7f80;   /* NaN: |bits| > lim */
        int16_t km = INT16_MIN, nanf = 0;
        for (Py_ssize_t j = 0; j < C; j++) {
            int16_t b = p[j];
            int16_t key = (int16_t)(b ^ (int16_t)((uint16_t)(b >> 15) >> 1));
            km = key > km ? key : km;
            nanf |= (int16_t)((b & 0x7fff) > lim);
        }
        *has_nan = nanf != 0;
        if (C == 0) return -INFINITY;
        uint16_t b = (uint16_t)(km ^ (int16_t)((uint16_t)(km >> 15) >> 1));
        return ld(&b, 0, DT);
    }
    return row_max(x, 0, C, has_nan, DT);
}

/* ------------------------------------------------------------------------ */
/* float16 through F16C (AVX2 / AVX-512 variants only)                       */

/* float64 -> float32 rounded to odd (truncate to 24 significant bits, then
 * set the last one if anything was cut off): a later round-to-nearest-even to
 * 11 bits from it is the correct rounding of the float64 (Boldo & Melquiond:
 * >= 2 extra bits). Done on the float64's bits (M: the 29 bits cut off), so
 * the conversion to float32 is exact for |v| >= 2^-126; smaller |v| round to
 * 0 in float16 either way, larger than FLT_MAX become inf (float16 inf too),
 * NaN stays NaN. */
AI float f64_to_f32_odd(double v) {
    const uint64_t M = (1ull << 29) - 1;
    uint64_t u = asu64(v);
    uint64_t t = (u & ~M) | (((u & M) + M) & (M + 1));
    return (float)asf64(t);
}

#if SMX_X86
/* n float16 -> float64 (vcvtph2ps then vcvtps2pd: both exact) */
__attribute__((target("arch=x86-64-v3"))) static void f16c_load(const uint16_t *s, double *d,
                                                                Py_ssize_t n) {
    Py_ssize_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 f = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + j)));
        _mm256_storeu_pd(d + j, _mm256_cvtps_pd(_mm256_castps256_ps128(f)));
        _mm256_storeu_pd(d + j + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
    }
    for (; j < n; j++) d[j] = (double)f16_to_f32(s[j]);
}

/* n float64 values v[j] * sc -> float16, each rounded once to nearest even:
 * rounded to odd in float32 first, then vcvtps2ph (round to nearest even) */
__attribute__((target("arch=x86-64-v3"))) static void f16c_store(const double *v, double sc,
                                                                 uint16_t *o, Py_ssize_t n) {
    float tmp[256];
    Py_ssize_t j0 = 0;
    while (j0 < n) {
        Py_ssize_t m = n - j0 < 256 ? n - j0 : 256;
        for (Py_ssize_t j = 0; j < m; j++) tmp[j] = f64_to_f32_odd(v[j0 + j] * sc);
        Py_ssize_t j = 0;
        for (; j + 8 <= m; j += 8)
            _mm_storeu_si128((__m128i *)(o + j0 + j),
                             _mm256_cvtps_ph(_mm256_loadu_ps(tmp + j), _MM_FROUND_TO_NEAREST_INT));
        for (; j < m; j++) o[j0 + j] = f64_to_f16(v[j0 + j] * sc);
        j0 += m;
    }
}
#define HAVE_F16C_PATH 1
#else
#define HAVE_F16C_PATH 0
#endif

/* n entries of a 16/32-bit row (from x[j0]) as float64 into d (exact) */
AI void load_w(const void *x, Py_ssize_t j0, Py_ssize_t n, double *d, const int DT,
               const int USE_FMA) {
    const char *xb = (const char *)x + (size_t)j0 * ITEMSIZE[DT];
#if SMX_X86
    if (DT == DT_F16 && USE_FMA) { f16c_load((const uint16_t *)xb, d, n); return; }
#endif
    for (Py_ssize_t j = 0; j < n; j++) d[j] = ld(xb, j, DT);
}

/* store the n float64 values v[j] * sc to o[j0:j0+n] (SCALE = 0: v[j]), each
 * rounded once to the format; returns how many stored values are +-0 */
AI int64_t store_w(void *o, Py_ssize_t j0, Py_ssize_t n, const double *v, double sc,
                   const int DT, const int USE_FMA, const int SCALE) {
    char *ob = (char *)o + (size_t)j0 * ITEMSIZE[DT];
    int64_t z = 0;
#if SMX_X86
    if (DT == DT_F16 && USE_FMA) {
        uint16_t *oh = (uint16_t *)ob;
        f16c_store(v, SCALE ? sc : 1.0, oh, n);
        for (Py_ssize_t j = 0; j < n; j++) z += (oh[j] & 0x7fffu) == 0;
        return z;
    }
#endif
    for (Py_ssize_t j = 0; j < n; j++) {
        double w = SCALE ? v[j] * sc : v[j];
        st(ob, j, w, DT);
        z += st_is_zero(w, DT);
    }
    return z;
}

/* ------------------------------------------------------------------------ */
/* the blocked exp sum of the 16/32-bit softmax path                         */
/*
 * Error budget (relative error of the float64 value before the one rounding
 * to the output format; 2^-44 of it costs at most 2^-20 ulp of a 24-bit
 * significand, so the result is within 0.5 + 2^-20 ulp; an exact value that
 * is subnormal in the output is < 2^-126 and gets an absolute error below
 * 2^-170, far under 2^-20 of its spacing 2^-149). u = 2^-53. Let q_j be the
 * exact (x_j - m)/t; only q_j >= -88 - ln C matter (the others give outputs
 * below 2^-126, or their sum is < C e^-88 relative to S >= 1). Two paths:
 * the portable loops (lowp_exp_sum_w below; the baseline and AVX2 variants)
 * and the AVX-512 rows (lowp_x4_row, further below; the AVX-512 variant).
 *  - q = fl(x - m) [ / t ]: |error| <= |q| u (|q| 2u with t), so exp(q) is
 *    off by <= 88 * 2u = 2^-45.5 relatively (2^-46.5 without t) for outputs
 *    >= 2^-126, and the sum S by <= 2^-46.6 (the e^q-weighted mean of |q|
 *    is < 41 for C < 2^40);
 *  - exp, in each term and so in S: E = 2^-50 (exp1w, 2^-50.2, above) on
 *    the portable path; E = 2^-46.97 on the AVX-512 rows (x4_exp_deg of
 *    degree 5, _smx_x4exp.h: 2^-47 for the polynomial + 1.07 u);
 *  - S = sum of the exp terms: portable: plain float64 sums in LANES lane
 *    accumulators restarted every BLK_W terms (<= (BLK_W - 1) u < 2^-48
 *    each), the block sums added as double-doubles (TwoSum): <= 2^-48 + 2u
 *    in all. AVX-512: 4-term trees (2u, the terms are >= 0) added to 8 lane
 *    double-doubles by TwoSum (exact; the lo words' own sums, of N < 2^26
 *    errors each <= u of the lane sum for C < 2^31, are off by <= N^2 u^2 <=
 *    2^-54), merged by dd_add, one last rounding: <= 3u + 2^-54 < 2^-51.1;
 *  - probabilities: e * fl(1 / S): 2 roundings, 2u.
 *    Total, portable: 2^-45.5 + 2^-50 + (2^-46.6 + 2^-50 + 2^-48 + 2^-52)
 *    + 2^-52 < 2^-44.6 < 2^-44;
 *    AVX-512: 2^-45.5 + 2^-46.97 + (2^-46.6 + 2^-46.97 + 2^-51.1) + 2^-52
 *    < 2^-44.34 < 2^-44.
 *  - log-probabilities: out = q - L, L = log1p(R), R = (n_max - 1) + sum of
 *    the terms with q < 0 (n_max entries equal the maximum): both q <= 0 and
 *    -L <= 0, so the subtraction does not cancel and the relative error is at
 *    most max(err q, err L) + u. err L <= err R + err log1p (glibc: 1 ulp)
 *    since R / ((1 + R) log1p(R)) <= 1, and err R <= 2^-45.3 (terms at
 *    q >= -109 when R >= 2^-126) + E + the sum's error: portable 2^-45.3 +
 *    2^-50 + 2^-48 + 2u < 2^-45.0, AVX-512 2^-45.3 + 2^-46.97 + 2^-51.1
 *    < 2^-44.88; with log1p's 2u and the final u: < 2^-44.8 in all.
 * float16 loads and stores through F16C are exact / one correct rounding
 * (f16c_load, f16c_store; the AVX-512 rows' x4_ld, x4_st), so they change
 * nothing above. Both paths: exp(q) = 0 for q < -708 and q = -inf.
 */
#define BLK_W 32
#define CH_W (BLK_W * LANES)

/* blocked lane sums of exp((x_j - m)/t) over the row (within the budget above),
 * with exp1w, F16C loads, and lane sums restarted every BLK_W terms; ninf
 * may be NULL (then -inf entries are not counted: count_neginf does it when
 * a caller needs it) */
AI double lowp_exp_sum_w(const void *x, Py_ssize_t C, double m, double t, double *ph,
                         int64_t *n0, int64_t *ninf, const int DT, const int HAS_T,
                         const int USE_FMA, const int STORE, const int MASK) {
    dd_t tot[LANES];
    double buf[CH_W], xd[CH_W];
    int64_t cz = 0, ci = 0;
    for (int l = 0; l < LANES; l++) tot[l].hi = tot[l].lo = 0.0;
    for (Py_ssize_t jb = 0; jb < C; jb += CH_W) {
        Py_ssize_t n = C - jb < CH_W ? C - jb : CH_W;
        double *eb = STORE ? ph + jb : buf;
        const char *xb = (const char *)x + (size_t)jb * ITEMSIZE[DT];
        /* 16-bit rows are widened into xd first: the exp loop over the raw
         * 16-bit input gets unrolled 4x by gcc and spills its registers */
        const int F16C = DT == DT_F16 || DT == DT_BF16;
        if (F16C) load_w(x, jb, n, xd, DT, USE_FMA);
        int64_t a = 0, b = 0;
        for (Py_ssize_t j = 0; j < n; j++) {
            double xv = F16C ? xd[j] : ld(xb, j, DT);
            double q = xv - m;
            if (HAS_T) q = q / t;
            double e = exp1w(q, USE_FMA);
            if (MASK) { a += q == 0.0; e = q == 0.0 ? 0.0 : e; }
            if (ninf) b += xv == -INFINITY;
            eb[j] = e;
        }
        cz += a; ci += b;
        double acc[LANES];
        for (int l = 0; l < LANES; l++) acc[l] = 0.0;
        Py_ssize_t j = 0;
        for (; j + LANES <= n; j += LANES)
            for (int l = 0; l < LANES; l++) acc[l] += eb[j + l];
        for (; j < n; j++) acc[0] += eb[j];
        for (int l = 0; l < LANES; l++) dd_add(&tot[l], acc[l]);
    }
    dd_t s = tot[0];
    for (int l = 1; l < LANES; l++) { dd_add(&s, tot[l].hi); s.lo += tot[l].lo; }
    if (n0) *n0 = cz;
    if (ninf) *ninf = ci;
    return s.hi + s.lo;
}

/* number of -inf entries of a 16/32-bit row (on the bits) */
AI int64_t count_neginf(const void *x, Py_ssize_t C, const int DT) {
    int64_t n = 0;
    if (DT == DT_F32) {
        const uint32_t *p = (const uint32_t *)x;
        for (Py_ssize_t j = 0; j < C; j++) n += p[j] == 0xff800000u;
    } else if (DT == DT_F16 || DT == DT_BF16) {
        const uint16_t *p = (const uint16_t *)x;
        const uint16_t ni = DT == DT_F16 ? 0xfc00u : 0xff80u;
        for (Py_ssize_t j = 0; j < C; j++) n += p[j] == ni;
    } else {
        for (Py_ssize_t j = 0; j < C; j++) n += ld(x, j, DT) == -INFINITY;
    }
    return n;
}

/* ------------------------------------------------------------------------ */
/* the 16/32-bit softmax rows with AVX-512 intrinsics (x86-64-v4 only)       */

#if SMX_X86
#include "_smx_x4exp.h"

/* the exp's degree (5, in the budget above; -DX4_DEG=7 builds the
 * cross-entropy's, for timing comparisons only) */
#ifndef X4_DEG
#define X4_DEG 5
#endif

/* the AVX-512 rows take C < X4_MAX_C (the lo words' sum below) */
#define X4_MAX_C ((Py_ssize_t)1 << 31)

/* x[j..j+8) of a 16/32-bit row as float64 (exact: vcvtps2pd of the float32,
 * of vcvtph2ps's float32 for float16, of the bits shifted up 16 for
 * bfloat16); without FULL, lanes outside act read -inf */
AI4 __m512d x4_ld(const void *x, Py_ssize_t j, __mmask8 act, const int DT, const int FULL) {
    if (DT == DT_F32) {
        const float *p = (const float *)x + j;
        __m256 f = FULL ? _mm256_loadu_ps(p)
                        : _mm256_mask_loadu_ps(_mm256_set1_ps(-INFINITY), act, p);
        return _mm512_cvtps_pd(f);
    }
    const uint16_t *p = (const uint16_t *)x + j;
    const short ninf = (short)(DT == DT_F16 ? 0xfc00 : 0xff80);
    __m128i h = FULL ? _mm_loadu_si128((const __m128i *)p)
                     : _mm_mask_loadu_epi16(_mm_set1_epi16(ninf), act, p);
    __m256 f = DT == DT_F16 ? _mm256_cvtph_ps(h)
                            : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm512_cvtps_pd(f);
}

/* q = (x - m) [/ t], as the portable loop */
AI4 __m512d x4_q(__m512d xv, __m512d mv, __m512d tv, const int HAS_T) {
    __m512d q = _mm512_sub_pd(xv, mv);
    return HAS_T ? _mm512_div_pd(q, tv) : q;
}

/* v rounded once to the format and stored at o[j..j+8) (without FULL: the
 * lanes of act only); returns the lanes of act whose stored value is +-0.
 * float32: vcvtpd2ps. float16: f64_to_f32_odd on the bits, then vcvtpd2ps
 * (exact) and vcvtps2ph, as f16c_store. bfloat16: f64_to_bf16 on 64-bit
 * lanes, the lanes outside [2^-126, 2^128) in magnitude (zeros, subnormals,
 * infinities, NaN) by its other branches. NEG: v <= 0 and the value is
 * stored with its sign bit set (q - L = +0 becomes -0.0, as the portable
 * loop's -(L - q)). */
AI4 __mmask8 x4_st(void *o, Py_ssize_t j, __m512d v, __mmask8 act, const int DT, const int FULL,
                   const int NEG) {
    if (DT == DT_F32) {
        __m256 f = _mm512_cvtpd_ps(v);
        if (NEG) f = _mm256_or_ps(f, _mm256_set1_ps(-0.0f));
        float *p = (float *)o + j;
        if (FULL) _mm256_storeu_ps(p, f);
        else _mm256_mask_storeu_ps(p, act, f);
        return _mm256_mask_cmp_ps_mask(act, f, _mm256_setzero_ps(), _CMP_EQ_OQ);
    }
    __m512i u = _mm512_castpd_si512(v);
    __m128i h;
    if (DT == DT_F16) {
        const __m512i M = _mm512_set1_epi64((1ll << 29) - 1);
        /* NEG: the sign bit added to b here (no carry into it: b < 2^30) */
        __m512i b = _mm512_add_epi64(_mm512_and_si512(u, M),
                                     NEG ? _mm512_set1_epi64(((1ll << 29) - 1) | INT64_MIN) : M);
        /* (u & ~M) | (b & (M + 1)): b < 2^30 */
        __m512i odd = _mm512_ternarylogic_epi64(u, b, _mm512_set1_epi64(~((1ll << 29) - 1)), 0xA8);
        h = _mm256_cvtps_ph(_mm512_cvtpd_ps(_mm512_castsi512_pd(odd)), _MM_FROUND_TO_NEAREST_INT);
    } else {
        __m512i a = NEG ? _mm512_and_si512(u, _mm512_set1_epi64(INT64_MAX)) : u;
        __m512i reb = _mm512_sub_epi64(a, _mm512_set1_epi64((int64_t)(1023 - 127) << 52));
        __m512i odd = _mm512_and_si512(_mm512_srli_epi64(reb, 45), _mm512_set1_epi64(1));
        __m512i r = _mm512_srli_epi64(
            _mm512_add_epi64(_mm512_add_epi64(reb, _mm512_set1_epi64((1ll << 44) - 1)), odd), 45);
        __mmask8 sp = _mm512_cmp_epu64_mask(_mm512_sub_epi64(reb, _mm512_set1_epi64(1ll << 52)),
                                            _mm512_set1_epi64(254ll << 52), _MM_CMPINT_NLT);
        if (sp) {
            __m512d ax = _mm512_castsi512_pd(a);
            __m512i sub = _mm512_sub_epi64(
                _mm512_castpd_si512(_mm512_add_pd(ax, _mm512_set1_pd(0x1p-81))),
                _mm512_castpd_si512(_mm512_set1_pd(0x1p-81)));
            r = _mm512_mask_blend_epi64(_mm512_cmp_pd_mask(ax, _mm512_set1_pd(0x1p-126), _CMP_LT_OQ),
                                        r, sub);
            r = _mm512_mask_blend_epi64(_mm512_cmp_pd_mask(ax, _mm512_set1_pd(0x1p128), _CMP_GE_OQ),
                                        r, _mm512_set1_epi64(0x7f80));
            r = _mm512_mask_blend_epi64(_mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q), r,
                                        _mm512_set1_epi64(0x7fc0));
        }
        if (NEG) r = _mm512_or_si512(r, _mm512_set1_epi64(0x8000));
        h = _mm512_cvtepi64_epi16(r);
    }
    uint16_t *p = (uint16_t *)o + j;
    if (FULL) _mm_storeu_si128((__m128i *)p, h);
    else _mm_mask_storeu_epi16(p, act, h);
    return _mm_mask_testn_epi16_mask(act, h, _mm_set1_epi16(0x7fff));
}

/* lowp_exp_sum_w with AVX-512 (budget above): e = exp(q) by x4_exp_deg
 * (DEG 5; 0 for q < -708 and q = -inf), stored to ph (STORE); MASK: the
 * terms with q = 0 left out and counted in *n0. The sum: 4-term trees added
 * to 8 lane double-doubles by TwoSum, the lanes merged by dd_add. */
AI4 double x4_exp_sum(const void *x, Py_ssize_t C, double m, double t, double *ph, int64_t *n0,
                      const int DT, const int HAS_T, const int STORE, const int MASK) {
    const __m512d mv = _mm512_set1_pd(m), tv = _mm512_set1_pd(t);
    const __m512d lim = _mm512_set1_pd(-708.0), zero = _mm512_setzero_pd();
    __m512d hi = zero, lo = zero;
    __m512i c0 = _mm512_setzero_si512();  /* per-lane counts of q = 0 */
#define X4_E(E, J, ACT, FULL)                                                   \
    {                                                                           \
        __m512d q = x4_q(x4_ld(x, (J), (ACT), DT, (FULL)), mv, tv, HAS_T);      \
        __mmask8 ok = _mm512_cmp_pd_mask(q, lim, _CMP_GE_OQ);                   \
        if (MASK) {                                                             \
            __mmask8 z0 = _mm512_cmp_pd_mask(q, zero, _CMP_EQ_OQ);              \
            c0 = _mm512_mask_sub_epi64(c0, z0, c0, _mm512_set1_epi64(-1));      \
            ok = _kandn_mask8(z0, ok);                                          \
        }                                                                       \
        E = x4_exp_deg(q, ok, X4_DEG);                                          \
        if (STORE && (FULL)) _mm512_storeu_pd(ph + (J), E);                     \
        else if (STORE) _mm512_mask_storeu_pd(ph + (J), (ACT), E);              \
    }
    Py_ssize_t j = 0;
    for (; j + 32 <= C; j += 32) {
        __m512d e0, e1, e2, e3;
        X4_E(e0, j, 0xff, 1) X4_E(e1, j + 8, 0xff, 1)
        X4_E(e2, j + 16, 0xff, 1) X4_E(e3, j + 24, 0xff, 1)
        x4_two_sum(&hi, &lo, _mm512_add_pd(_mm512_add_pd(e0, e1), _mm512_add_pd(e2, e3)));
    }
    for (; j < C; j += 8) {
        Py_ssize_t n = C - j < 8 ? C - j : 8;
        __mmask8 act = (__mmask8)((1u << n) - 1u);
        __m512d e;
        X4_E(e, j, act, 0)
        x4_two_sum(&hi, &lo, e);
    }
#undef X4_E
    double h8[8], l8[8];
    _mm512_storeu_pd(h8, hi);
    _mm512_storeu_pd(l8, lo);
    dd_t s = {0.0, 0.0};
    for (int l = 0; l < 8; l++) { dd_add(&s, h8[l]); s.lo += l8[l]; }
    if (n0) *n0 = _mm512_reduce_add_epi64(c0);
    return s.hi + s.lo;
}

/* probabilities: the terms in ph times inv, stored; returns the count of
 * stored zeros */
AI4 int64_t x4_prob_t(const void *x, void *o, Py_ssize_t C, double m, double t, double *ph,
                      const int DT, const int HAS_T) {
    double inv = 1.0 / x4_exp_sum(x, C, m, t, ph, NULL, DT, HAS_T, 1, 0);
    const __m512d iv = _mm512_set1_pd(inv);
    const __m512i one = _mm512_set1_epi64(-1);
    __m512i z = _mm512_setzero_si512();  /* per-lane counts (negated) of stored zeros */
    Py_ssize_t j = 0;
#define X4_P(J, ACT, FULL)                                                      \
    {                                                                           \
        __m512d v = _mm512_mul_pd(FULL ? _mm512_loadu_pd(ph + (J))              \
                                       : _mm512_maskz_loadu_pd((ACT), ph + (J)), iv); \
        z = _mm512_mask_add_epi64(z, x4_st(o, (J), v, (ACT), DT, (FULL), 0), z, one); \
    }
    for (; j + 32 <= C; j += 32) {
        X4_P(j, 0xff, 1) X4_P(j + 8, 0xff, 1) X4_P(j + 16, 0xff, 1) X4_P(j + 24, 0xff, 1)
    }
    for (; j < C; j += 8) {
        Py_ssize_t n = C - j < 8 ? C - j : 8;
        X4_P(j, (__mmask8)((1u << n) - 1u), 0)
    }
#undef X4_P
    return -_mm512_reduce_add_epi64(z);
}

/* log-probabilities q - L, L = log1p((n_max - 1) + sum of the terms with
 * q < 0); returns the count of those below LOG_UNDER (-inf entries included) */
AI4 int64_t x4_log_t(const void *x, void *o, Py_ssize_t C, double m, double t, const int DT,
                     const int HAS_T) {
    int64_t n0;
    double rest = x4_exp_sum(x, C, m, t, NULL, &n0, DT, HAS_T, 0, 1);
    double L = log1p((double)(n0 - 1) + rest);
    const __m512d mv = _mm512_set1_pd(m), tv = _mm512_set1_pd(t), Lv = _mm512_set1_pd(L);
    const __m512d lim = _mm512_set1_pd(LOG_UNDER[DT]);
    const __m512i one = _mm512_set1_epi64(-1);
    __m512i z = _mm512_setzero_si512();  /* per-lane counts (negated) of w < LOG_UNDER */
    /* w = q - L <= 0, stored with the sign set (x4_st NEG) */
#define X4_W(J, ACT, FULL)                                                      \
    {                                                                           \
        __m512d q = x4_q(x4_ld(x, (J), (ACT), DT, (FULL)), mv, tv, HAS_T);      \
        __m512d w = _mm512_sub_pd(q, Lv);                                       \
        z = _mm512_mask_add_epi64(z, _mm512_mask_cmp_pd_mask((ACT), w, lim, _CMP_LT_OQ), z, one); \
        x4_st(o, (J), w, (ACT), DT, (FULL), 1);                                 \
    }
    Py_ssize_t j = 0;
    for (; j + 32 <= C; j += 32) {
        X4_W(j, 0xff, 1) X4_W(j + 8, 0xff, 1) X4_W(j + 16, 0xff, 1) X4_W(j + 24, 0xff, 1)
    }
    for (; j < C; j += 8) {
        Py_ssize_t n = C - j < 8 ? C - j : 8;
        X4_W(j, (__mmask8)((1u << n) - 1u), 0)
    }
#undef X4_W
    return -_mm512_reduce_add_epi64(z);
}

/* one 16/32-bit row, kind 0 (softmax: ph holds C doubles of scratch) or 1
 * (log-softmax): the outputs, and the count lowp_row_prob / lowp_row_log
 * correct for the -inf entries; C < X4_MAX_C, a finite maximum m */
SMX_V4 __attribute__((noinline, unused)) static int64_t
lowp_x4_row(const void *x, void *o, Py_ssize_t C, double m, double t, double *ph, int dt,
            int has_t, int kind) {
#define X4_ROW(DT)                                                              \
    if (kind == 0) return has_t ? x4_prob_t(x, o, C, m, t, ph, DT, 1)           \
                                : x4_prob_t(x, o, C, m, t, ph, DT, 0);          \
    return has_t ? x4_log_t(x, o, C, m, t, DT, 1) : x4_log_t(x, o, C, m, t, DT, 0);
    switch (dt) {
    case DT_F16: X4_ROW(DT_F16)
    case DT_BF16: X4_ROW(DT_BF16)
    default: X4_ROW(DT_F32)
    }
#undef X4_ROW
}
#define HAVE_X4_ROWS 1
#else
#define HAVE_X4_ROWS 0
#endif

#endif
