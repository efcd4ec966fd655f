/* _smx_xent.h: cross-entropy with class indices and with
 * probability targets, one sweep per row, with their Python glue.
 * Included once, by _smx_native.c (one translation unit, so every kernel
 * inlines into each CPU variant); not a public header. */
#ifndef SMX_XENT_H
#define SMX_XENT_H

/* ------------------------------------------------------------------------ */
/* cross-entropy with class indices, one sweep per row                      */

typedef struct {
    const void *x;
    Py_ssize_t C;
    const int64_t *target;
    const double *weight;  /* NULL: 1 */
    double wsum;           /* sum of weights (smoothing) */
    int64_t ignore_index;
    double eps;
    double *loss, *logp_true, *p_true, *margin, *entropy;
    int64_t *argmax;
    uint8_t *top5, *fallback;
    float *fbuf;           /* scratch, C floats: a 16-bit row widened (AVX-512 path) */
    const double *wpos;    /* max(w, 0) (smoothing with weights, AVX-512 path), else NULL */
} xe_args;

/* One sweep of a 16/32-bit row for the cross-entropy (after the max pass):
 * R = sum_{x_j < m} exp(x_j - m) (+ the n_max - 1 other maxima) as a
 * double-double, the entropy dot sum_j e_j (m - x_j), the second maximum, the
 * first index of the maximum and the count of entries above x_y (top-5).
 * d = x - m keeps its rounding error c (TwoSum) folded as e (1 + c); the terms
 * (exp1: <= 1.1 ulp with FMA) are summed in LANES lanes restarted every XBLK
 * terms (<= (XBLK - 1) u) with double-double block totals; the dot likewise. */
#define XBLK 4
AI void lowp_xent_sweep(const void *x, Py_ssize_t C, double m, double xy, double *rh, double *rl,
                        double *dot, double *m2, Py_ssize_t *kfirst, int64_t *above,
                        const int DT, const int USE_FMA) {
    dd_t tot[LANES], dtot[LANES];
    for (int l = 0; l < LANES; l++) tot[l].hi = tot[l].lo = dtot[l].hi = dtot[l].lo = 0.0;
    int64_t n0 = 0, ab = 0, k2 = order_key((int64_t)asu64(-INFINITY)), kf = C;
    double eb[XBLK * LANES], db[XBLK * LANES];
    for (Py_ssize_t jb = 0; jb < C; jb += XBLK * LANES) {
        Py_ssize_t n = C - jb < XBLK * LANES ? C - jb : XBLK * LANES;
        const char *xb = (const char *)x + (size_t)jb * ITEMSIZE[DT];
        for (Py_ssize_t j = 0; j < n; j++) {
            double xv = ld(xb, j, DT);
            double d = xv - m, bv = d - xv;
            double c = (xv - (d - bv)) + (-m - bv);   /* TwoSum(x, -m) error */
            double e = exp1(d, USE_FMA);
            int z = d == 0.0;
            e = (z | (d < -708.0)) ? 0.0 : FMA_(e, c, e, USE_FMA);
            eb[j] = e;
            db[j] = e > 0.0 ? e * -d : 0.0;
            n0 += z;
            ab += xv > xy;
            double v2 = z ? -INFINITY : xv;   /* (this form vectorises) */
            int64_t key = order_key((int64_t)asu64(v2));
            k2 = key > k2 ? key : k2;
            int64_t kk = z ? (int64_t)(jb + j) : (int64_t)C;
            kf = kk < kf ? kk : kf;
        }
        double acc[LANES], dacc[LANES];
        for (int l = 0; l < LANES; l++) acc[l] = dacc[l] = 0.0;
        Py_ssize_t j = 0;
        for (; j + LANES <= n; j += LANES)
            for (int l = 0; l < LANES; l++) { acc[l] += eb[j + l]; dacc[l] += db[j + l]; }
        for (; j < n; j++) { acc[0] += eb[j]; dacc[0] += db[j]; }
        for (int l = 0; l < LANES; l++) { dd_add(&tot[l], acc[l]); dd_add(&dtot[l], dacc[l]); }
    }
    dd_t sm = {(double)(n0 - 1), 0.0};
    for (int l = 0; l < LANES; l++) { dd_add(&sm, tot[l].hi); sm.lo += tot[l].lo; }
    double hi = sm.hi + sm.lo;
    *rl = sm.lo - (hi - sm.hi);
    *rh = hi;
    *dot = dd_total(dtot, LANES);
    *m2 = n0 > 1 ? m : asf64((uint64_t)order_key(k2));
    *kfirst = kf;
    *above = ab;
}

/* Everything a row gives after its sweep: argmax k, L = lh + ll = log1p(R)
 * (R = shi + ...), the entropy dot sum_j e_j (m - x_j), the second maximum m2
 * (multiset: m again on a tie), the count of entries above x_y (top-5; < 0:
 * count here) and, with HAVE_SM, the smoothing sum sum_c w+_c (m - x_c) (else
 * it is summed here). */
AI void xent_finish(const xe_args *A, Py_ssize_t r, const void *x, double m, double m2,
                    Py_ssize_t k, double lh, double ll, double shi, double dot, int64_t above,
                    double sm_given, const int HAVE_SM, const int DT, const int USE_FMA) {
    Py_ssize_t C = A->C;
    Py_ssize_t k5 = C < 5 ? C : 5;
    double eps = A->eps;
    const double *w = A->weight;
    int64_t y = A->target[r];
    A->argmax[r] = k;
    A->entropy[r] = (lh + ll) + dot / (1.0 + shi);
    if (y == A->ignore_index) {
        A->loss[r] = 0.0;
        A->logp_true[r] = NAN;
        A->p_true[r] = NAN;
        A->margin[r] = NAN;
        A->top5[r] = 0;
        return;
    }
    double lpy, zy;
    double xy = ld(x, y, DT);
    {
        double q, c;
        shifted(xy, m, 1.0, &q, &c, 0, USE_FMA);
        zy = q + c;
        double s = q - lh, bv = s - q;
        double e1 = (q - (s - bv)) + (-lh - bv);
        lpy = (y == k) ? -(lh + ll) : s + ((e1 + c) - ll);
        if (q == -INFINITY) lpy = -INFINITY;
    }
    A->logp_true[r] = lpy;
    A->p_true[r] = exp(lpy);
    double wy = w ? w[y] : 1.0;
    double loss = (wy > 0.0) ? -(wy * lpy) : 0.0;
    if (eps > 0.0) {
        /* sum_c w_c (-logp_c) = L W + sum_c w_c (-z_c), every term >= 0 */
        double sm = sm_given;
        if (!HAVE_SM) {
            /* lanes restarted every XBLK terms, block sums into double-doubles */
            dd_t tot[LANES];
            for (int l = 0; l < LANES; l++) tot[l].hi = tot[l].lo = 0.0;
            for (Py_ssize_t jb = 0; jb < C; jb += XBLK * LANES) {
                Py_ssize_t je = C - jb < XBLK * LANES ? C : jb + XBLK * LANES;
                double acc[LANES];
                for (int l = 0; l < LANES; l++) acc[l] = 0.0;
                Py_ssize_t j = jb;
                for (; j + LANES <= je; j += LANES)
                    for (int l = 0; l < LANES; l++) {
                        double wc = w ? w[j + l] : 1.0;
                        double nz = m - ld(x, j + l, DT);
                        acc[l] += wc > 0.0 ? wc * nz : 0.0;
                    }
                for (; j < je; j++) {
                    double wc = w ? w[j] : 1.0;
                    double nz = m - ld(x, j, DT);
                    acc[0] += wc > 0.0 ? wc * nz : 0.0;
                }
                for (int l = 0; l < LANES; l++) dd_add(&tot[l], acc[l]);
            }
            sm = dd_total(tot, LANES);
        }
        double smooth = (lh + ll) * A->wsum + sm;
        double nll_part = (wy > 0.0) ? (1.0 - eps) * (wy * -lpy) : 0.0;
        loss = nll_part + (eps / (double)C) * smooth;
    }
    A->loss[r] = 0.0 + loss;
    /* top-5: fewer than k5 classes strictly above the true one */
    if (above < 0) {
        above = 0;
        for (Py_ssize_t j = 0; j < C; j++) above += ld(x, j, DT) > xy;
    }
    A->top5[r] = above < k5;
    if (C == 1) A->margin[r] = NAN;
    else if (y == k) {
        double q, c;
        shifted(m2, m, 1.0, &q, &c, 0, USE_FMA);
        A->margin[r] = -(q + c);
    } else A->margin[r] = zy;
}

/* the portable row loop (the baseline variant, and float64 logits on every variant) */
AI void xent_rows_t(const xe_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, const int DT,
                    const int USE_FMA) {
    Py_ssize_t C = A->C;
    size_t isz = (size_t)ITEMSIZE[DT];
    for (Py_ssize_t r = r0; r < r1; r++) {
        const char *x = (const char *)A->x + (size_t)r * C * isz;
        int has_nan;
        double m = row_max(x, 0, C, &has_nan, DT);
        if (has_nan || !isfinite(m)) { A->fallback[r] = 1; (*nfb)++; continue; }
        A->fallback[r] = 0;
        int64_t y = A->target[r];
        Py_ssize_t k;
        double m2, lh, ll, shi, dot;
        int64_t above = -1;
        if (DT != DT_F64) {
            double xy0 = y == A->ignore_index ? INFINITY : ld(x, y, DT);
            double slo;
            lowp_xent_sweep(x, C, m, xy0, &shi, &slo, &dot, &m2, &k, &above, DT, USE_FMA);
            log1p_dd(shi, slo, &lh, &ll);
        } else {
            k = first_index(x, C, m, DT);
            rest_lse(x, C, k, m, 1.0, &lh, &ll, &m2, &shi, &dot, DT, 0, USE_FMA, 1);
        }
        xent_finish(A, r, x, m, m2, k, lh, ll, shi, dot, above, 0.0, 0, DT, USE_FMA);
    }
}

AI void xent_rows_kernel_t(const xe_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, int dt,
                          const int USE_FMA) {
    DISPATCH_DT(xent_rows_t, A, r0, r1, nfb)
}
VARIANTS(xent_rows_kernel, (const xe_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, int dt),
         A, r0, r1, nfb, dt)

/* ------------------------------------------------------------------------ */
/* cross-entropy with class indices, 16/32-bit logits, AVX-512               */
/*
 * Two passes per row, both on float32 values (16-bit rows are widened into a
 * scratch row first, exactly):
 *  1. 16 lanes of float32: the maximum m and the first index of it (each lane
 *     keeps its maximum and where it first reached it), the second maximum
 *     (multiset: m on a tie), the count of entries above x_y (top-5), NaN, and
 *     the largest and the smallest non-zero |x| (on the bits).
 *  2. 8 lanes of float64: d = x - m, e = exp(d) for -708 <= d < 0 (the maxima
 *     are left out: R = (n_max - 1) + sum e, L = log1p(R)), R as lane
 *     double-doubles, the entropy dot sum e (-d) and the smoothing sum.
 * Error of R (u = 2^-53), which bounds L's relative error (R / ((1 + R)
 * log1p R) <= 1):
 *  - d = fl(x - m) is exact when every non-zero |x_j| >= 2^-28 max|x_j|: the
 *    exact difference is a multiple of g = min(ulp(x), ulp(m)) >= 2^-24
 *    min(|x|, |m|) >= 2^-52 max|x| and |x - m| <= 2 max|x|, so it has <= 53
 *    bits (16-bit formats have coarser ulps still). Pass 1 checks this per
 *    row; rows that fail it (and rows with a -inf) take lowp_xent_sweep, which
 *    carries fl(x - m)'s error.
 *  - exp(d) = 2^(k/16) exp(r): k = rint(16 d / ln 2), r = d - k CHI - k CLO
 *    with CHI = ln2/16 to 39 bits (k CHI exact for |k| < 2^14, d - k CHI exact
 *    by Sterbenz) and CLO the rest: |r| <= ln2/32 = 0.02166, r's error
 *    <= u |r| + 2^-90 < 0.022 u; exp(r) = 1 + p, p = r + r^2 Q(r), Q the
 *    Taylor polynomial to r^7/7! (truncation r^8/8! < 2^-59.5 = 0.012 u),
 *    |p| <= 0.022 so p's roundings cost <= 0.03 u; T = 2^(j/16) rounded (0.5 u)
 *    from a 16-entry table in two registers (vpermt2pd); T + T p in one FMA
 *    (0.5 u); the scaling by 2^floor(k/16) (vscalefpd) is exact for d >= -708.
 *    In all <= 1.07 u per term.
 *  - the sum: 4 vectors added as a tree (2 levels: <= 2 u for terms >= 0),
 *    each tree sum added to its lane's double-double by TwoSum (exact; the lo
 *    words' own sum is off by ~n^2 u^2), the lanes merged the same way.
 *  So R is within 3.1 u, L = log1p_dd(R) within 3.1 u + O(u^2), and the loss
 *    (xent_finish: L + |x_y - m| with the shift's TwoSum error kept, no
 *    cancellation, one rounding) within 3.6 u, under the 6 ulp stated (an ulp
 *    of float64 is >= u relative).
 *  The entropy dot sum e (-d) and the smoothing sum sum w+ (-d) are summed the
 *  same way (4 terms per lane, then TwoSum into lane double-doubles), as on
 *  the portable path (lowp_xent_sweep, xent_finish, exp_sum's DOT): their
 *  rounding error does not grow with C. Entropy H = L + D / (1 + R'), R' = R
 *  without the other maxima' count, first order: the exp errors (1.07 u per
 *  term) enter D and R alike (<= 2.2 u of H), D's products and blocks 4 u,
 *  R's 2 u, the quotient 2 u, the final sum u: <= 12 u worst case; stated 8
 *  ulp (measured <= 0.9 ulp on rows of 131072 classes where the plain lane
 *  sums had drifted by 67 ulp: tests/test_xent_native_wide.py).
 */
#if SMX_X86
#include "_smx_x4exp.h"  /* x4_exp (exp(d) in 1.07 u, above), x4_two_sum, AI4 */

typedef struct {
    float m, m2;
    Py_ssize_t k;
    int64_t above;
    int special, exact;
} x4_pass1_t;

/* the scalar end of pass 1 (AVX-512: 16 lanes, AVX2: 8): the lanes' maxima,
 * second maxima, first positions of their maxima, counts above x_y and the
 * largest / smallest non-zero |x| bits (stored as bits - 1) merged into o */
AI void p1_merge(const float *fm1, const float *fm2, const int32_t *ip, const int32_t *ia,
                 const uint32_t *ux, const uint32_t *un, int nl, x4_pass1_t *o) {
    float m = -INFINITY, s2 = -INFINITY;
    uint32_t bx = 0, bn = 0xffffffffu;
    int64_t ab = 0;
    for (int l = 0; l < nl; l++) {
        m = fm1[l] > m ? fm1[l] : m;
        s2 = fm2[l] > s2 ? fm2[l] : s2;
        bx = ux[l] > bx ? ux[l] : bx;
        bn = un[l] < bn ? un[l] : bn;
        ab += ia[l];
    }
    int32_t k = INT32_MAX, nm = 0;
    for (int l = 0; l < nl; l++) {
        if (fm1[l] == m) { nm++; k = ip[l] < k ? ip[l] : k; }
        else s2 = fm1[l] > s2 ? fm1[l] : s2;
    }
    o->m = m;
    o->m2 = nm > 1 ? m : s2;
    o->k = k;
    o->above = ab;
    o->special = bx > 0x7f800000u || !(m > -INFINITY && m < INFINITY);
    float big, small;
    uint32_t sb = bn + 1u;
    memcpy(&big, &bx, 4);
    memcpy(&small, &sb, 4);
    o->exact = bx < 0x7f800000u && (bn == 0xffffffffu || small >= big * 0x1p-28f);
}

#define X4_P1_BODY(V, ACT)                                                     \
    {                                                                          \
        __mmask16 gt = _mm512_cmp_ps_mask((V), m1, _CMP_GT_OQ);                \
        __m512 lo = _mm512_mask_blend_ps(gt, (V), m1); /* min(m1, v) */         \
        m1 = _mm512_mask_blend_ps(gt, m1, (V));                                \
        pos = _mm512_mask_blend_epi32(gt, pos, idx);                           \
        m2 = _mm512_max_ps(lo, m2); /* a NaN lo leaves m2 */                   \
        __mmask16 ab = _mm512_mask_cmp_ps_mask((ACT), (V), xyv, _CMP_GT_OQ);    \
        above = _mm512_mask_add_epi32(above, ab, above, one);                  \
        __m512i bits = _mm512_and_si512(_mm512_castps_si512(V), absm);         \
        amax = _mm512_mask_max_epu32(amax, (ACT), amax, bits);                 \
        amin = _mm512_mask_min_epu32(amin, (ACT), amin, _mm512_sub_epi32(bits, one)); \
        idx = _mm512_add_epi32(idx, sixteen);                                  \
    }

/* pass 1 (see above) of a float32 row, C < 2^31 - 16 */
AI4 void x4_pass1(const float *x, Py_ssize_t C, float xy, x4_pass1_t *o) {
    __m512 m1 = _mm512_set1_ps(-INFINITY), m2 = m1, xyv = _mm512_set1_ps(xy);
    __m512i pos = _mm512_set1_epi32(INT32_MAX);
    __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i sixteen = _mm512_set1_epi32(16), one = _mm512_set1_epi32(1);
    const __m512i absm = _mm512_set1_epi32(0x7fffffff);
    __m512i above = _mm512_setzero_si512(), amax = above, amin = _mm512_set1_epi32(-1);
    Py_ssize_t j = 0;
    for (; j + 16 <= C; j += 16) {
        __m512 v = _mm512_loadu_ps(x + j);
        X4_P1_BODY(v, (__mmask16)0xffff)
    }
    if (j < C) {
        __mmask16 act = (__mmask16)((1u << (C - j)) - 1u);
        __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), act, x + j);
        X4_P1_BODY(v, act)
    }
    float fm1[16], fm2[16];
    int32_t ip[16], ia[16];
    uint32_t ux[16], un[16];
    _mm512_storeu_ps(fm1, m1);
    _mm512_storeu_ps(fm2, m2);
    _mm512_storeu_si512(ip, pos);
    _mm512_storeu_si512(ia, above);
    _mm512_storeu_si512(ux, amax);
    _mm512_storeu_si512(un, amin);
    p1_merge(fm1, fm2, ip, ia, ux, un, 16, o);
}

/* pass 2 (see above) of a float32 row: R (without the n_max - 1) as *rh + *rl,
 * the dot sum e (-d) and, with SM, the smoothing sum sum w+ (-d) (wp NULL: w = 1) */
AI4 void x4_pass2(const float *x, Py_ssize_t C, double m, const double *wp, double *rh,
                  double *rl, double *dot, double *ssum, const int SM) {
    const __m512d mv = _mm512_set1_pd(m), zero = _mm512_setzero_pd();
    __m512d hi = zero, lo = zero, dh = zero, dl = zero, sh = zero, sl = zero;
    Py_ssize_t j = 0;
#define X4_D(J) _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + (J))), mv)
#define X4_SM(D, J)                                                            \
    if (SM) sm = wp ? _mm512_fnmadd_pd(_mm512_loadu_pd(wp + (J)), (D), sm) : _mm512_sub_pd(sm, (D));
    /* the dot and smoothing sums: 4 terms per lane (<= 3 u), then TwoSum into
     * lane double-doubles, like R (plain lane sums over C/8 terms drifted by
     * 67 ulp of the entropy on flat rows of 131072 classes) */
    for (; j + 32 <= C; j += 32) {
        __m512d d0 = X4_D(j), d1 = X4_D(j + 8), d2 = X4_D(j + 16), d3 = X4_D(j + 24);
        __m512d e0 = x4_exp(d0), e1 = x4_exp(d1), e2 = x4_exp(d2), e3 = x4_exp(d3);
        __m512d dt = _mm512_mul_pd(e0, _mm512_sub_pd(zero, d0)), sm = zero;
        dt = _mm512_fnmadd_pd(e1, d1, dt);
        dt = _mm512_fnmadd_pd(e2, d2, dt);
        dt = _mm512_fnmadd_pd(e3, d3, dt);
        X4_SM(d0, j) X4_SM(d1, j + 8) X4_SM(d2, j + 16) X4_SM(d3, j + 24)
        x4_two_sum(&hi, &lo, _mm512_add_pd(_mm512_add_pd(e0, e1), _mm512_add_pd(e2, e3)));
        x4_two_sum(&dh, &dl, dt);
        if (SM) x4_two_sum(&sh, &sl, sm);
    }
    for (; j < C; j += 8) {
        Py_ssize_t n = C - j < 8 ? C - j : 8;
        __mmask8 act = (__mmask8)((1u << n) - 1u);
        /* absent lanes read m: d = 0 adds nothing anywhere */
        __m512d d = _mm512_sub_pd(
            _mm512_cvtps_pd(_mm256_mask_loadu_ps(_mm256_set1_ps((float)m), act, x + j)), mv);
        __m512d e = x4_exp(d);
        x4_two_sum(&dh, &dl, _mm512_mul_pd(e, _mm512_sub_pd(zero, d)));
        if (SM) x4_two_sum(&sh, &sl, wp ? _mm512_mul_pd(_mm512_maskz_loadu_pd(act, wp + j),
                                                        _mm512_sub_pd(zero, d))
                                        : _mm512_sub_pd(zero, d));
        x4_two_sum(&hi, &lo, e);
    }
#undef X4_D
#undef X4_SM
    double h[8], l8[8], h2[8], l2[8], h3[8], l3[8];
    _mm512_storeu_pd(h, hi);
    _mm512_storeu_pd(l8, lo);
    _mm512_storeu_pd(h2, dh);
    _mm512_storeu_pd(l2, dl);
    _mm512_storeu_pd(h3, sh);
    _mm512_storeu_pd(l3, sl);
    dd_t s = {0.0, 0.0}, dd[8], ss[8];
    for (int l = 0; l < 8; l++) {
        dd_add(&s, h[l]);
        s.lo += l8[l];
        dd[l].hi = h2[l]; dd[l].lo = l2[l];
        ss[l].hi = h3[l]; ss[l].lo = l3[l];
    }
    double t = s.hi + s.lo;
    *rl = s.lo - (t - s.hi);
    *rh = t;
    *dot = dd_total(dd, 8);
    *ssum = dd_total(ss, 8);
}

/* the steps the two-pass row loops share (AVX-512 and AVX2): a 16-bit row
 * widened into fbuf (exactly), a row failing the exactness check swept by the
 * portable lowp_xent_sweep, and a row's outputs from its two passes */
AI const float *xr_widen(const char *x, Py_ssize_t C, float *fbuf, const int DT) {
    if (DT == DT_F32) return (const float *)x;
    for (Py_ssize_t j = 0; j < C; j++) fbuf[j] = (float)ld(x, j, DT);  /* exact */
    return fbuf;
}

AI void xr_inexact(const xe_args *A, Py_ssize_t r, const char *x, double m, float xy,
                   const int DT) {
    double shi, slo, lh, ll, dot, m2;
    Py_ssize_t k;
    int64_t above;
    lowp_xent_sweep(x, A->C, m, (double)xy, &shi, &slo, &dot, &m2, &k, &above, DT, 1);
    log1p_dd(shi, slo, &lh, &ll);
    xent_finish(A, r, x, m, m2, k, lh, ll, shi, dot, above, 0.0, 0, DT, 1);
}

AI void xr_finish(const xe_args *A, Py_ssize_t r, const char *x, const float *xf,
                  const x4_pass1_t *P, double rh, double rl, double dot, double ssum,
                  const int DT) {
    double lh, ll;
    if (P->m2 == P->m) {  /* a tie for the maximum: R gets n_max - 1 */
        int64_t n0 = 0;
        for (Py_ssize_t j = 0; j < A->C; j++) n0 += xf[j] == P->m;
        dd_t R = {(double)(n0 - 1), 0.0};
        dd_add(&R, rh);
        R.lo += rl;
        rh = R.hi + R.lo;
        rl = R.lo - (rh - R.hi);
    }
    log1p_dd(rh, rl, &lh, &ll);
    xent_finish(A, r, x, (double)P->m, (double)P->m2, P->k, lh, ll, rh, dot, P->above, ssum, 1,
                DT, 1);
}

AI4 void xent_rows_x4_t(const xe_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb,
                        const int DT) {
    Py_ssize_t C = A->C;
    size_t isz = (size_t)ITEMSIZE[DT];
    for (Py_ssize_t r = r0; r < r1; r++) {
        const char *x = (const char *)A->x + (size_t)r * C * isz;
        const float *xf = xr_widen(x, C, A->fbuf, DT);
        int64_t y = A->target[r];
        float xy = y == A->ignore_index ? INFINITY : xf[y];
        x4_pass1_t P;
        x4_pass1(xf, C, xy, &P);
        if (P.special) { A->fallback[r] = 1; (*nfb)++; continue; }
        A->fallback[r] = 0;
        if (!P.exact) { xr_inexact(A, r, x, (double)P.m, xy, DT); continue; }
        double rh, rl, dot, ssum = 0.0;
        if (A->eps > 0.0) x4_pass2(xf, C, (double)P.m, A->wpos, &rh, &rl, &dot, &ssum, 1);
        else x4_pass2(xf, C, (double)P.m, NULL, &rh, &rl, &dot, &ssum, 0);
        xr_finish(A, r, x, xf, &P, rh, rl, dot, ssum, DT);
    }
}

SMX_V4 static void xent_rows_x4(const xe_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb,
                                int dt) {
    switch (dt) {
    case DT_F16: xent_rows_x4_t(A, r0, r1, nfb, DT_F16); break;
    case DT_BF16: xent_rows_x4_t(A, r0, r1, nfb, DT_BF16); break;
    case DT_F32: xent_rows_x4_t(A, r0, r1, nfb, DT_F32); break;
    default: xent_rows_kernel_v4(A, r0, r1, nfb, dt); break;
    }
}
#endif

/* ------------------------------------------------------------------------ */
/* cross-entropy with class indices, 16/32-bit logits, AVX2 (x86-64-v3)      */
/*
 * The AVX-512 kernel's two passes (comment above) on 256-bit vectors, for the
 * CPUs without AVX-512: pass 1 over 8 float32 lanes (the same maxima, first
 * argmax, second maximum, top-5 count, NaN and exactness check; the lanes
 * merged by p1_merge), pass 2 over 4 float64 lanes with the same sums (R as
 * lane double-doubles, the dot and smoothing sums 4 terms per lane then
 * TwoSum). Rows failing the check take lowp_xent_sweep, as there.
 * AVX2 has no 16-double permute (vpermt2pd) and no vscalefpd, so the exp
 * differs (x3_exp): exp(d) = 2^(k/4) exp(r), k = rint(4 d / ln 2), r = d -
 * k CHI - k CLO with CHI = ln2/4 to 39 bits (k CHI exact for |k| < 2^14, d -
 * k CHI exact by Sterbenz): |r| <= ln2/8 = 0.0867, r's error <= u |r| + 2^-86
 * < 0.087 u; exp(r) = 1 + p, p = r + r^2 Q(r), Q the Taylor polynomial to
 * r^10/10! (truncation r^11/11! < 2^-64, 0.001 u), |p| <= 0.091 so p's
 * roundings (the last FMA 0.5 u of p, Q's a few u of r^2 Q <= 0.004) cost
 * <= 0.07 u of exp(r) >= 0.917; T = 2^(j/4) rounded (0.5 u) from a 4-entry
 * table (two in-lane permutes and a blend), scaled by 2^floor(k/4) on its
 * exponent bits (exact: exp(d) >= 2^-1021.5 for d >= -708, no subnormal);
 * T + T p in one FMA (0.5 u). In all <= 1.16 u per term (AVX-512: 1.07 u).
 * So R is within 3.2 u, L within 3.2 u + O(u^2) and the loss within 3.7 u
 * (stated 6 ulp); the entropy's worst case grows by 2 x 0.09 u (12.2 u;
 * stated 8 ulp, measured as above); the smoothing sum has no exp in it.
 * The degree-10 minimax of exp1w (_smx_lowp.h, 2^-50.2 = 7 u per term) would
 * take R to 9 u and break the 6 ulp stated for the loss. x4_exp's 16-entry
 * table by _mm256_i64gather_pd (degree 7, 1.07 u) measured 5% faster on Zen 4
 * (1024 x 32000 float32: 44 vs 47 ms, one thread), which has AVX-512 and does
 * not run this path; gathers are microcoded and several times slower on Zen 2
 * / Zen 3, which do, while the permutes and the blend are single cheap
 * instructions everywhere.
 */
#if SMX_X86
#define AI3 SMX_V3 static inline __attribute__((always_inline))

#define X3_P1_BODY(V, ACT)                                                     \
    {                                                                          \
        __m256 gt = _mm256_cmp_ps((V), m1, _CMP_GT_OQ);                        \
        __m256 lo = _mm256_blendv_ps((V), m1, gt); /* min(m1, v) */             \
        m1 = _mm256_blendv_ps(m1, (V), gt);                                    \
        pos = _mm256_blendv_epi8(pos, idx, _mm256_castps_si256(gt));           \
        m2 = _mm256_max_ps(lo, m2); /* a NaN lo leaves m2 */                   \
        above = _mm256_sub_epi32(                                              \
            above, _mm256_castps_si256(_mm256_cmp_ps((V), xyv, _CMP_GT_OQ)));  \
        __m256i bits = _mm256_and_si256(_mm256_castps_si256(V), absm);         \
        amax = _mm256_max_epu32(amax, _mm256_and_si256(bits, (ACT)));          \
        amin = _mm256_min_epu32(                                               \
            amin, _mm256_or_si256(_mm256_sub_epi32(bits, one),                 \
                                  _mm256_xor_si256((ACT), ones)));             \
        idx = _mm256_add_epi32(idx, eight);                                    \
    }

/* pass 1 of a float32 row over 8 lanes (x4_pass1's outputs), C < 2^31 - 16 */
AI3 void x3_pass1(const float *x, Py_ssize_t C, float xy, x4_pass1_t *o) {
    __m256 m1 = _mm256_set1_ps(-INFINITY), m2 = m1, xyv = _mm256_set1_ps(xy);
    __m256i pos = _mm256_set1_epi32(INT32_MAX);
    __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i eight = _mm256_set1_epi32(8), one = _mm256_set1_epi32(1);
    const __m256i absm = _mm256_set1_epi32(0x7fffffff), ones = _mm256_set1_epi32(-1);
    __m256i above = _mm256_setzero_si256(), amax = above, amin = ones;
    Py_ssize_t j = 0;
    for (; j + 8 <= C; j += 8) {
        __m256 v = _mm256_loadu_ps(x + j);
        X3_P1_BODY(v, ones)
    }
    if (j < C) {  /* absent lanes read -inf and are left out of the |x| range */
        __m256i act = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(C - j)),
                                         _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        __m256 v = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), _mm256_maskload_ps(x + j, act),
                                    _mm256_castsi256_ps(act));
        X3_P1_BODY(v, act)
    }
    float fm1[8], fm2[8];
    int32_t ip[8], ia[8];
    uint32_t ux[8], un[8];
    _mm256_storeu_ps(fm1, m1);
    _mm256_storeu_ps(fm2, m2);
    _mm256_storeu_si256((__m256i *)ip, pos);
    _mm256_storeu_si256((__m256i *)ia, above);
    _mm256_storeu_si256((__m256i *)ux, amax);
    _mm256_storeu_si256((__m256i *)un, amin);
    p1_merge(fm1, fm2, ip, ia, ux, un, 8, o);
}

/* exp(d) for -708 <= d < 0, else 0, over 4 lanes (see above) */
AI3 __m256d x3_exp(__m256d d) {
    /* 2^(j/4), j = 0..3: A = (T0, T1) and B = (T2, T3) in both 128-bit halves */
    const __m256d TA = _mm256_setr_pd(0x1.0000000000000p+0, 0x1.306fe0a31b715p+0,
                                      0x1.0000000000000p+0, 0x1.306fe0a31b715p+0);
    const __m256d TB = _mm256_setr_pd(0x1.6a09e667f3bcdp+0, 0x1.ae89f995ad3adp+0,
                                      0x1.6a09e667f3bcdp+0, 0x1.ae89f995ad3adp+0);
    const __m256d sh = _mm256_set1_pd(SHIFT);
    __m256d kd = _mm256_fmadd_pd(d, _mm256_set1_pd(0x1.71547652b82fep+2), sh);
    __m256i ki = _mm256_castpd_si256(kd);       /* SHIFT's bits + k */
    kd = _mm256_sub_pd(kd, sh);
    __m256d r = _mm256_fnmadd_pd(kd, _mm256_set1_pd(0x1.62e42fefa4000p-3), d);  /* exact */
    r = _mm256_fnmadd_pd(kd, _mm256_set1_pd(-0x1.8432a1b0e2634p-45), r);
    __m256d r2 = _mm256_mul_pd(r, r);
    __m256d q = _mm256_fmadd_pd(_mm256_set1_pd(1.0 / 3628800.0), r,
                                _mm256_set1_pd(1.0 / 362880.0));
    q = _mm256_fmadd_pd(q, r, _mm256_set1_pd(1.0 / 40320.0));
    q = _mm256_fmadd_pd(q, r, _mm256_set1_pd(1.0 / 5040.0));
    q = _mm256_fmadd_pd(q, r, _mm256_set1_pd(1.0 / 720.0));
    q = _mm256_fmadd_pd(q, r, _mm256_set1_pd(1.0 / 120.0));
    q = _mm256_fmadd_pd(q, r, _mm256_set1_pd(1.0 / 24.0));
    q = _mm256_fmadd_pd(q, r, _mm256_set1_pd(1.0 / 6.0));
    q = _mm256_fmadd_pd(q, r, _mm256_set1_pd(0.5));
    __m256d p = _mm256_fmadd_pd(r2, q, r);
    /* T: bit 0 of k picks within a half (vpermilpd reads bit 1), bit 1 the table */
    __m256i sel = _mm256_slli_epi64(ki, 1);
    __m256d t = _mm256_blendv_pd(_mm256_permutevar_pd(TA, sel), _mm256_permutevar_pd(TB, sel),
                                 _mm256_castsi256_pd(_mm256_slli_epi64(ki, 62)));
    /* times 2^floor(k/4) on the exponent: (SHIFT's bits + k) >> 2 = SHIFT's bits / 4
     * + floor(k/4), and SHIFT's bits / 4 << 52 vanishes mod 2^64 */
    t = _mm256_castsi256_pd(_mm256_add_epi64(_mm256_castpd_si256(t),
                                             _mm256_slli_epi64(_mm256_srli_epi64(ki, 2), 52)));
    __m256d ok = _mm256_and_pd(_mm256_cmp_pd(d, _mm256_setzero_pd(), _CMP_LT_OQ),
                               _mm256_cmp_pd(d, _mm256_set1_pd(-708.0), _CMP_GE_OQ));
    return _mm256_and_pd(ok, _mm256_fmadd_pd(t, p, t));
}

AI3 void x3_two_sum(__m256d *hi, __m256d *lo, __m256d s) {
    __m256d t = _mm256_add_pd(*hi, s), bv = _mm256_sub_pd(t, *hi);
    __m256d err = _mm256_add_pd(_mm256_sub_pd(*hi, _mm256_sub_pd(t, bv)), _mm256_sub_pd(s, bv));
    *hi = t;
    *lo = _mm256_add_pd(*lo, err);
}

/* pass 2 of a float32 row over 4 lanes (x4_pass2's outputs and sums) */
AI3 void x3_pass2(const float *x, Py_ssize_t C, double m, const double *wp, double *rh,
                  double *rl, double *dot, double *ssum, const int SM) {
    const __m256d mv = _mm256_set1_pd(m), zero = _mm256_setzero_pd();
    __m256d hi = zero, lo = zero, dh = zero, dl = zero, sh = zero, sl = zero;
    Py_ssize_t j = 0;
#define X3_D(J) _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + (J))), mv)
#define X3_SM(D, J)                                                            \
    if (SM) sm = wp ? _mm256_fnmadd_pd(_mm256_loadu_pd(wp + (J)), (D), sm) : _mm256_sub_pd(sm, (D));
    for (; j + 16 <= C; j += 16) {  /* 4 terms per lane, then TwoSum (as x4_pass2) */
        __m256d d0 = X3_D(j), d1 = X3_D(j + 4), d2 = X3_D(j + 8), d3 = X3_D(j + 12);
        __m256d e0 = x3_exp(d0), e1 = x3_exp(d1), e2 = x3_exp(d2), e3 = x3_exp(d3);
        __m256d dt = _mm256_mul_pd(e0, _mm256_sub_pd(zero, d0)), sm = zero;
        dt = _mm256_fnmadd_pd(e1, d1, dt);
        dt = _mm256_fnmadd_pd(e2, d2, dt);
        dt = _mm256_fnmadd_pd(e3, d3, dt);
        X3_SM(d0, j) X3_SM(d1, j + 4) X3_SM(d2, j + 8) X3_SM(d3, j + 12)
        x3_two_sum(&hi, &lo, _mm256_add_pd(_mm256_add_pd(e0, e1), _mm256_add_pd(e2, e3)));
        x3_two_sum(&dh, &dl, dt);
        if (SM) x3_two_sum(&sh, &sl, sm);
    }
    for (; j < C; j += 4) {
        __m128i act = _mm_cmplt_epi32(_mm_setr_epi32(0, 1, 2, 3),
                                      _mm_set1_epi32((int)(C - j < 4 ? C - j : 4)));
        /* absent lanes read m: d = 0 adds nothing anywhere */
        __m256d d = _mm256_sub_pd(
            _mm256_cvtps_pd(_mm_blendv_ps(_mm_set1_ps((float)m), _mm_maskload_ps(x + j, act),
                                          _mm_castsi128_ps(act))), mv);
        __m256d e = x3_exp(d), nd = _mm256_sub_pd(zero, d);
        x3_two_sum(&dh, &dl, _mm256_mul_pd(e, nd));
        if (SM) x3_two_sum(&sh, &sl, wp ? _mm256_mul_pd(_mm256_maskload_pd(
                                                            wp + j, _mm256_cvtepi32_epi64(act)), nd)
                                        : nd);
        x3_two_sum(&hi, &lo, e);
    }
#undef X3_D
#undef X3_SM
    double h[4], l4[4], h2[4], l2[4], h3[4], l3[4];
    _mm256_storeu_pd(h, hi);
    _mm256_storeu_pd(l4, lo);
    _mm256_storeu_pd(h2, dh);
    _mm256_storeu_pd(l2, dl);
    _mm256_storeu_pd(h3, sh);
    _mm256_storeu_pd(l3, sl);
    dd_t s = {0.0, 0.0}, dd[4], ss[4];
    for (int l = 0; l < 4; l++) {
        dd_add(&s, h[l]);
        s.lo += l4[l];
        dd[l].hi = h2[l]; dd[l].lo = l2[l];
        ss[l].hi = h3[l]; ss[l].lo = l3[l];
    }
    double t = s.hi + s.lo;
    *rl = s.lo - (t - s.hi);
    *rh = t;
    *dot = dd_total(dd, 4);
    *ssum = dd_total(ss, 4);
}

AI3 void xent_rows_x3_t(const xe_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb,
                        const int DT) {
    Py_ssize_t C = A->C;
    size_t isz = (size_t)ITEMSIZE[DT];
    for (Py_ssize_t r = r0; r < r1; r++) {
        const char *x = (const char *)A->x + (size_t)r * C * isz;
        const float *xf = xr_widen(x, C, A->fbuf, DT);
        int64_t y = A->target[r];
        float xy = y == A->ignore_index ? INFINITY : xf[y];
        x4_pass1_t P;
        x3_pass1(xf, C, xy, &P);
        if (P.special) { A->fallback[r] = 1; (*nfb)++; continue; }
        A->fallback[r] = 0;
        if (!P.exact) { xr_inexact(A, r, x, (double)P.m, xy, DT); continue; }
        double rh, rl, dot, ssum = 0.0;
        if (A->eps > 0.0) x3_pass2(xf, C, (double)P.m, A->wpos, &rh, &rl, &dot, &ssum, 1);
        else x3_pass2(xf, C, (double)P.m, NULL, &rh, &rl, &dot, &ssum, 0);
        xr_finish(A, r, x, xf, &P, rh, rl, dot, ssum, DT);
    }
}

SMX_V3 static void xent_rows_x3(const xe_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb,
                                int dt) {
    switch (dt) {
    case DT_F16: xent_rows_x3_t(A, r0, r1, nfb, DT_F16); break;
    case DT_BF16: xent_rows_x3_t(A, r0, r1, nfb, DT_BF16); break;
    case DT_F32: xent_rows_x3_t(A, r0, r1, nfb, DT_F32); break;
    default: xent_rows_kernel_v3(A, r0, r1, nfb, dt); break;
    }
}
#endif

/* the two-pass rows when the AVX-512 or AVX2 variant runs (16/32-bit logits,
 * C < 2^31 - 16) */
static void xent_rows_run(const xe_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, int dt) {
#if SMX_X86
    if (g_isa == ISA_AVX512 && A->C < INT32_MAX - 16) { xent_rows_x4(A, r0, r1, nfb, dt); return; }
    if (g_isa == ISA_AVX2 && A->C < INT32_MAX - 16) { xent_rows_x3(A, r0, r1, nfb, dt); return; }
#endif
    xent_rows_kernel(A, r0, r1, nfb, dt);
}

/* ------------------------------------------------------------------------ */
/* cross-entropy with probability targets, one sweep per row                */
/*
 * PyTorch's loss for probability targets t (N, C) with class weights w and
 * label smoothing eps: loss = -sum_c a_c logp_c, a_c = w_c ((1 - eps) t_c +
 * eps / C). With m the row's maximum and L = log(sum_c exp(x_c - m)) =
 * log1p(R), -logp_c = (m - x_c) + L, so
 *     loss = sum_c a_c (m - x_c) + L sum_c a_c,
 * two sums of non-negative terms (t >= 0, w >= 0; a row with a negative or NaN
 * target is handed back to the numpy reference): nothing cancels. The plain
 * cross-entropy nll = -sum_c t_c logp_c is the same with a = t.
 * Error budget of the loss (relative, u = 2^-53): a_c <= 5u (eps / C, 1 - eps,
 * the product, the sum, w_c), (m - x_c) u, the product u; the sums of
 * non-negative terms in LANES lanes restarted every XBLK terms with
 * double-double block totals 3u: sum_c a_c (m - x_c) <= 10u, sum_c a_c <= 8u;
 * L: R from exp1 (<= 1.1 ulp with FMA, the x - m error folded), lane sums
 * (3u) and log1p_dd, <= 6u (float64 logits: rest_lse's L, <= 2u); the product
 * and the final sum u each: <= 16u = 8 ulp in all (stated: 16 ulp).
 * The residual max_c |p_c - a_c / A| (A = sum_c a_c) is a difference of two
 * numbers in [0, 1] each within ~10u relative: <= 12u absolute.
 */
typedef struct {
    const void *x;
    Py_ssize_t C;
    const void *t;          /* float64 (t64 = 1) or float32 targets, (N, C) */
    int t64;
    const double *weight;   /* NULL: 1 */
    double eps;
    double *loss, *nll, *logp_true, *p_true, *margin, *entropy, *residual;
    int64_t *argmax, *true_class;
    uint8_t *top5, *fallback;
    double *eb;             /* scratch, C (+ 4) doubles */
    double *tsum;           /* sum_c t_c of each row; NaN if a target is negative or NaN */
    float *fbuf;            /* scratch, C floats: a 16-bit row widened (AVX-512 path) */
} xp_args;

AI double ldt(const void *t, Py_ssize_t j, const int T64) {
    return T64 ? ((const double *)t)[j] : (double)((const float *)t)[j];
}

/* first index of the maximum of the targets (NaN: ignored here, flagged by
 * the sweep) */
AI Py_ssize_t target_argmax(const void *t, Py_ssize_t C, const int T64) {
    int64_t km = INT64_MIN;  /* the max on integer keys (see row_max): it vectorises */
    for (Py_ssize_t j = 0; j < C; j++) {
        int64_t key = order_key((int64_t)asu64(ldt(t, j, T64)));
        km = key > km ? key : km;
    }
    double tm = asf64((uint64_t)order_key(km));
    int64_t kf = C;
    for (Py_ssize_t j = 0; j < C; j++) {
        int64_t kk = ldt(t, j, T64) == tm ? (int64_t)j : (int64_t)C;
        kf = kk < kf ? kk : kf;
    }
    return kf < C ? (Py_ssize_t)kf : 0;
}

typedef struct {
    dd_t r, a, da, st, dt;
    double dot, m2;
    int64_t n0, above, kfirst, bad, inf_a, inf_t;  /* inf_*: a (or t) > 0 on m - x = inf */
} xp_sums;

/* the sweep of one row (after the max pass): e_j = exp(x_j - m) into eb
 * (unmasked), R = sum of the terms with x_j < m, the entropy dot, sum a,
 * sum a (m - x), sum t, sum t (m - x), the second maximum, the first index of
 * the maximum, the count of entries above xy, and whether a target is
 * negative or NaN */
AI void xp_sweep(const xp_args *A, const void *x, const void *t, double m, double xy,
                 xp_sums *S, const int DT, const int T64, const int HAS_W, const int USE_FMA) {
    Py_ssize_t C = A->C;
    const double *w = A->weight;
    double *ebuf = A->eb;
    double k1 = 1.0 - A->eps, k0 = A->eps / (double)C;
    dd_t tot[6][LANES];
    for (int l = 0; l < LANES; l++)
        for (int q = 0; q < 6; q++) tot[q][l].hi = tot[q][l].lo = 0.0;
    int64_t n0 = 0, ab = 0, bad = 0, ia = 0, it = 0, k2 = order_key((int64_t)asu64(-INFINITY)), kf = C;
    double bufs[6][XBLK * LANES];
    for (Py_ssize_t jb = 0; jb < C; jb += XBLK * LANES) {
        Py_ssize_t n = C - jb < XBLK * LANES ? C - jb : XBLK * LANES;
        const char *xb = (const char *)x + (size_t)jb * ITEMSIZE[DT];
        const char *tb = (const char *)t + (size_t)jb * (T64 ? 8 : 4);
        for (Py_ssize_t j = 0; j < n; j++) {
            double xv = ld(xb, j, DT);
            double d = xv - m, bv = d - xv;
            double c = (xv - (d - bv)) + (-m - bv);   /* TwoSum(x, -m) error */
            double e = exp1(d, USE_FMA);
            int z = d == 0.0;
            e = (d < -708.0) ? 0.0 : FMA_(e, c, e, USE_FMA);
            ebuf[jb + j] = e;
            double es = z ? 0.0 : e;
            bufs[0][j] = es;
            bufs[5][j] = es > 0.0 ? es * -d : 0.0;
            double tv = ldt(tb, j, T64);
            double a = FMA_(k1, tv, k0, 0);
            if (HAS_W) a *= w[jb + j];
            double nz = m - xv;
            bufs[1][j] = a;
            int fin = nz < INFINITY;   /* m - x = inf: an infinite loss, counted apart */
            ia += (a > 0.0) & !fin;
            it += (tv > 0.0) & !fin;
            bufs[2][j] = (a > 0.0) & fin ? a * nz : 0.0;
            bufs[3][j] = tv;
            bufs[4][j] = (tv > 0.0) & fin ? tv * nz : 0.0;
            bad += !(tv >= 0.0);
            n0 += z;
            ab += xv > xy;
            double v2 = z ? -INFINITY : xv;
            int64_t key = order_key((int64_t)asu64(v2));
            k2 = key > k2 ? key : k2;
            int64_t kk = z ? (int64_t)(jb + j) : (int64_t)C;
            kf = kk < kf ? kk : kf;
        }
        for (int q = 0; q < 6; q++) {
            double acc[LANES];
            for (int l = 0; l < LANES; l++) acc[l] = 0.0;
            Py_ssize_t j = 0;
            for (; j + LANES <= n; j += LANES)
                for (int l = 0; l < LANES; l++) acc[l] += bufs[q][j + l];
            for (; j < n; j++) acc[0] += bufs[q][j];
            for (int l = 0; l < LANES; l++) dd_add(&tot[q][l], acc[l]);
        }
    }
    dd_t *outs[5] = {&S->r, &S->a, &S->da, &S->st, &S->dt};
    for (int q = 0; q < 5; q++) {
        dd_t s = {0.0, 0.0};
        for (int l = 0; l < LANES; l++) { dd_add(&s, tot[q][l].hi); s.lo += tot[q][l].lo; }
        double hi = s.hi + s.lo;
        outs[q]->lo = s.lo - (hi - s.hi);
        outs[q]->hi = hi;
    }
    S->dot = dd_total(tot[5], LANES);
    S->n0 = n0;
    S->above = ab;
    S->kfirst = kf;
    S->bad = bad;
    S->inf_a = ia;
    S->inf_t = it;
    S->m2 = n0 > 1 ? m : asf64((uint64_t)order_key(k2));
}

/* max_c |e_c inv - a_c inv_a| over the row (every term finite and >= 0: the
 * maximum is taken on the float64 bits, an integer reduction that vectorises) */
AI double xp_residual(const xp_args *A, const void *t, double inv, double inv_a, const int T64,
                       const int HAS_W) {
    Py_ssize_t C = A->C;
    const double *w = A->weight, *ebuf = A->eb;
    double k1 = 1.0 - A->eps, k0 = A->eps / (double)C;
    int64_t best = 0;
    for (Py_ssize_t j = 0; j < C; j++) {
        double a = FMA_(k1, ldt(t, j, T64), k0, 0);
        if (HAS_W) a *= w[j];
        double v = fabs(ebuf[j] * inv - a * inv_a);
        int64_t key = (int64_t)asu64(v);
        best = key > best ? key : best;
    }
    return asf64((uint64_t)best);
}

/* a row handed back (NaN or non-finite maximum): its targets are still checked
 * (xent_checks.check_target_sums): their sum, NaN if one is negative or NaN */
AI void xp_hand_back(const xp_args *A, Py_ssize_t r, const char *t, int64_t *nfb, const int T64) {
    dd_t ts = {0.0, 0.0};
    int64_t bad = 0;
    for (Py_ssize_t j = 0; j < A->C; j++) {
        double tv = ldt(t, j, T64);
        bad += !(tv >= 0.0);
        dd_add(&ts, tv);
    }
    A->tsum[r] = bad ? NAN : ts.hi + ts.lo;
    A->fallback[r] = 1;
    (*nfb)++;
}

/* a row's outputs from its sweep's sums (every path of the probability targets) */
AI void xp_finish(const xp_args *A, Py_ssize_t r, const char *x, const char *t, double m,
                  Py_ssize_t y, double xy, const xp_sums *S, const int DT, const int T64,
                  const int HAS_W, const int USE_FMA) {
    Py_ssize_t C = A->C;
    Py_ssize_t k5 = C < 5 ? C : 5;
    double lh, ll, shi, dot;
    Py_ssize_t k = (Py_ssize_t)S->kfirst;
    if (DT != DT_F64) {
        dd_t R = {(double)(S->n0 - 1), 0.0};
        dd_add(&R, S->r.hi);
        R.lo += S->r.lo;
        shi = R.hi + R.lo;
        double slo = R.lo - (shi - R.hi);
        log1p_dd(shi, slo, &lh, &ll);
        dot = S->dot;
    } else {
        double m2;
        rest_lse(x, C, k, m, 1.0, &lh, &ll, &m2, &shi, &dot, DT, 0, USE_FMA, 1);
    }
    double L = lh + ll;
    A->argmax[r] = k;
    A->entropy[r] = L + dot / (1.0 + shi);
    /* loss = sum a (m - x) + L sum a; nll the same with a = t */
    double asum = S->a.hi + S->a.lo, tsum = S->st.hi + S->st.lo;
    /* the terms a (m - x) are >= 0 (targets checked: S->bad counts negative or
     * NaN ones), so a NaN sum is a product or partial sum that overflowed
     * (inf - inf in the double-double's error terms): the loss is +inf */
    int ovf_a = !S->bad && !(S->da.hi == S->da.hi), ovf_t = !S->bad && !(S->dt.hi == S->dt.hi);
    A->loss[r] = S->inf_a || ovf_a
                     ? INFINITY
                     : (S->da.hi + (S->da.lo + FMA_(lh, asum, ll * asum, USE_FMA))) + 0.0;
    A->nll[r] = S->inf_t || ovf_t
                    ? INFINITY
                    : (S->dt.hi + (S->dt.lo + FMA_(lh, tsum, ll * tsum, USE_FMA))) + 0.0;
    A->residual[r] = asum > 0.0 ? xp_residual(A, t, 1.0 / (1.0 + shi), 1.0 / asum, T64, HAS_W)
                                : NAN;
    double q, c;
    shifted(xy, m, 1.0, &q, &c, 0, USE_FMA);
    double s = q - lh, bv = s - q;
    double e1 = (q - (s - bv)) + (-lh - bv);
    double lpy = (y == k) ? -L : s + ((e1 + c) - ll);
    if (q == -INFINITY) lpy = -INFINITY;
    A->logp_true[r] = lpy;
    A->p_true[r] = exp(lpy);
    A->top5[r] = S->above < k5;
    if (C == 1) A->margin[r] = NAN;
    else if (y == k) {
        double q2, c2;
        shifted(S->m2, m, 1.0, &q2, &c2, 0, USE_FMA);
        A->margin[r] = -(q2 + c2);
    } else A->margin[r] = q + c;
}

AI void xp_rows_tt(const xp_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, const int DT,
                   const int T64, const int HAS_W, const int USE_FMA) {
    Py_ssize_t C = A->C;
    size_t isz = (size_t)ITEMSIZE[DT], tsz = T64 ? 8 : 4;
    for (Py_ssize_t r = r0; r < r1; r++) {
        const char *x = (const char *)A->x + (size_t)r * C * isz;
        const char *t = (const char *)A->t + (size_t)r * C * tsz;
        int has_nan;
        double m = row_max(x, 0, C, &has_nan, DT);
        Py_ssize_t y = target_argmax(t, C, T64);
        A->true_class[r] = y;
        if (has_nan || !isfinite(m)) { xp_hand_back(A, r, t, nfb, T64); continue; }
        double xy = ld(x, y, DT);
        xp_sums S;
        xp_sweep(A, x, t, m, xy, &S, DT, T64, HAS_W, USE_FMA);
        A->tsum[r] = S.bad ? NAN : S.st.hi + S.st.lo;
        if (S.bad) { A->fallback[r] = 1; (*nfb)++; continue; }
        A->fallback[r] = 0;
        xp_finish(A, r, x, t, m, y, xy, &S, DT, T64, HAS_W, USE_FMA);
    }
}

#if SMX_X86
/* The AVX-512 sweep of a 16/32-bit row with probability targets: x4_pass1
 * (maximum, first argmax, second maximum, entries above x_y, the exactness
 * check), then one pass of x4_exp over 8 lanes with R, sum a, sum a (m - x),
 * sum t, sum t (m - x) as lane double-doubles (4 terms per lane, then TwoSum:
 * 3 u each, as xp_sweep's, so the budget above holds), the entropy dot, the
 * negative-or-NaN target flag, and the terms stored for the residual. Rows
 * failing the exactness check take xp_sweep. */
AI4 __m512d x4_load_t(const void *t, Py_ssize_t j, __mmask8 act, const int T64) {
    if (T64) return _mm512_maskz_loadu_pd(act, (const double *)t + j);
    return _mm512_cvtps_pd(_mm256_maskz_loadu_ps(act, (const float *)t + j));
}

/* the probability-target sweeps' lane double-doubles (AVX-512: 8 lanes, AVX2:
 * 4; sum q of lane l at h[q nl + l] + lo[q nl + l]) merged into S: R, sum a,
 * sum a (m - x), sum t, sum t (m - x) renormalised, the entropy dot */
AI void xp_lanes_merge(const double *h, const double *lo, int nl, xp_sums *S) {
    dd_t *outs[5] = {&S->r, &S->a, &S->da, &S->st, &S->dt};
    for (int q = 0; q < 5; q++) {
        dd_t sq = {0.0, 0.0};
        for (int l = 0; l < nl; l++) { dd_add(&sq, h[q * nl + l]); sq.lo += lo[q * nl + l]; }
        double th = sq.hi + sq.lo;
        outs[q]->lo = sq.lo - (th - sq.hi);
        outs[q]->hi = th;
    }
    dd_t dd[8];
    for (int l = 0; l < nl; l++) { dd[l].hi = h[5 * nl + l]; dd[l].lo = lo[5 * nl + l]; }
    S->dot = dd_total(dd, nl);
}

AI4 void x4_prob_sweep(const xp_args *A, const float *x, const void *t, double m, xp_sums *S,
                       const int T64, const int HAS_W) {
    Py_ssize_t C = A->C;
    const double *w = A->weight;
    double *ebuf = A->eb;
    const __m512d mv = _mm512_set1_pd(m), k1 = _mm512_set1_pd(1.0 - A->eps),
                  k0 = _mm512_set1_pd(A->eps / (double)C), zero = _mm512_setzero_pd(),
                  onev = _mm512_set1_pd(1.0);
    __m512d hi[6], lo[6], acc[6];
    for (int q = 0; q < 6; q++) hi[q] = lo[q] = acc[q] = zero;
    __mmask8 bad = 0;
    int nacc = 0;
    int64_t n0 = 0;
    for (Py_ssize_t j = 0; j < C; j += 8) {
        Py_ssize_t n = C - j < 8 ? C - j : 8;
        __mmask8 act = (__mmask8)((1u << n) - 1u);
        /* absent lanes read m and t = 0: they add nothing */
        __m512d d = _mm512_sub_pd(
            _mm512_cvtps_pd(_mm256_mask_loadu_ps(_mm256_set1_ps((float)m), act, x + j)), mv);
        __m512d e = x4_exp(d);
        __mmask8 top = _mm512_cmp_pd_mask(d, zero, _CMP_EQ_OQ);
        n0 += __builtin_popcount((unsigned)(top & act));
        _mm512_mask_storeu_pd(ebuf + j, act, _mm512_mask_blend_pd(top, e, onev));
        __m512d tv = x4_load_t(t, j, act, T64);
        bad |= _mm512_mask_cmp_pd_mask(act, tv, zero, _CMP_NGE_UQ);  /* t < 0 or NaN */
        __m512d a = _mm512_add_pd(_mm512_mul_pd(k1, tv), k0);
        if (HAS_W) a = _mm512_mul_pd(a, _mm512_maskz_loadu_pd(act, w + j));
        a = _mm512_maskz_mov_pd(act, a);
        __m512d nz = _mm512_sub_pd(zero, d);
        acc[5] = _mm512_fmadd_pd(e, nz, acc[5]);
        acc[0] = _mm512_add_pd(acc[0], e);
        acc[1] = _mm512_add_pd(acc[1], a);
        acc[2] = _mm512_fmadd_pd(a, nz, acc[2]);
        acc[3] = _mm512_add_pd(acc[3], tv);
        acc[4] = _mm512_fmadd_pd(tv, nz, acc[4]);
        if (++nacc == 4 || j + 8 >= C) {  /* 4 terms per lane, then into the double-doubles */
            for (int q = 0; q < 6; q++) { x4_two_sum(&hi[q], &lo[q], acc[q]); acc[q] = zero; }
            nacc = 0;
        }
    }
    double h[6 * 8], l8[6 * 8];
    for (int q = 0; q < 6; q++) {
        _mm512_storeu_pd(h + 8 * q, hi[q]);
        _mm512_storeu_pd(l8 + 8 * q, lo[q]);
    }
    xp_lanes_merge(h, l8, 8, S);
    S->bad = bad != 0;
    S->n0 = n0;
    S->inf_a = S->inf_t = 0;  /* exact rows have no -inf */
}

AI4 void xp_rows_x4_tt(const xp_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb,
                       const int DT, const int T64, const int HAS_W) {
    Py_ssize_t C = A->C;
    size_t isz = (size_t)ITEMSIZE[DT], tsz = T64 ? 8 : 4;
    for (Py_ssize_t r = r0; r < r1; r++) {
        const char *x = (const char *)A->x + (size_t)r * C * isz;
        const char *t = (const char *)A->t + (size_t)r * C * tsz;
        const float *xf = xr_widen(x, C, A->fbuf, DT);
        Py_ssize_t y = target_argmax(t, C, T64);
        A->true_class[r] = y;
        x4_pass1_t P;
        x4_pass1(xf, C, xf[y], &P);
        if (P.special) { xp_hand_back(A, r, t, nfb, T64); continue; }
        double m = (double)P.m, xy = (double)xf[y];
        xp_sums S;
        if (P.exact) {
            x4_prob_sweep(A, xf, t, m, &S, T64, HAS_W);
            S.kfirst = P.k;
            S.above = P.above;
            S.m2 = (double)P.m2;
        } else {
            xp_sweep(A, x, t, m, xy, &S, DT, T64, HAS_W, 1);
        }
        A->tsum[r] = S.bad ? NAN : S.st.hi + S.st.lo;
        if (S.bad) { A->fallback[r] = 1; (*nfb)++; continue; }
        A->fallback[r] = 0;
        xp_finish(A, r, x, t, m, y, xy, &S, DT, T64, HAS_W, 1);
    }
}

AI4 void xp_rows_x4_t(const xp_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb,
                      const int DT) {
    if (A->t64) {
        if (A->weight) xp_rows_x4_tt(A, r0, r1, nfb, DT, 1, 1);
        else xp_rows_x4_tt(A, r0, r1, nfb, DT, 1, 0);
    } else {
        if (A->weight) xp_rows_x4_tt(A, r0, r1, nfb, DT, 0, 1);
        else xp_rows_x4_tt(A, r0, r1, nfb, DT, 0, 0);
    }
}
#endif

AI void xp_rows_t(const xp_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, const int DT,
                  const int USE_FMA) {
    if (A->t64) {
        if (A->weight) xp_rows_tt(A, r0, r1, nfb, DT, 1, 1, USE_FMA);
        else xp_rows_tt(A, r0, r1, nfb, DT, 1, 0, USE_FMA);
    } else {
        if (A->weight) xp_rows_tt(A, r0, r1, nfb, DT, 0, 1, USE_FMA);
        else xp_rows_tt(A, r0, r1, nfb, DT, 0, 0, USE_FMA);
    }
}

AI void xp_rows_kernel_t(const xp_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, int dt,
                         const int USE_FMA) {
    DISPATCH_DT(xp_rows_t, A, r0, r1, nfb)
}
VARIANTS(xp_rows_kernel, (const xp_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, int dt),
         A, r0, r1, nfb, dt)

#if SMX_X86
SMX_V4 static void xp_rows_x4(const xp_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb,
                              int dt) {
    switch (dt) {
    case DT_F16: xp_rows_x4_t(A, r0, r1, nfb, DT_F16); break;
    case DT_BF16: xp_rows_x4_t(A, r0, r1, nfb, DT_BF16); break;
    case DT_F32: xp_rows_x4_t(A, r0, r1, nfb, DT_F32); break;
    default: xp_rows_kernel_v4(A, r0, r1, nfb, dt); break;
    }
}
#endif

#if SMX_X86
/* The AVX2 sweep of a 16/32-bit row with probability targets: x4_prob_sweep
 * over 4 float64 lanes with x3_exp (1.16 u per term where x4_exp has 1.07 u:
 * L's share of the 16 u budget above moves by < 0.3 u), after x3_pass1. */
AI3 void x3_prob_sweep(const xp_args *A, const float *x, const void *t, double m, xp_sums *S,
                       const int T64, const int HAS_W) {
    Py_ssize_t C = A->C;
    const double *w = A->weight;
    double *ebuf = A->eb;
    const __m256d mv = _mm256_set1_pd(m), k1 = _mm256_set1_pd(1.0 - A->eps),
                  k0 = _mm256_set1_pd(A->eps / (double)C), zero = _mm256_setzero_pd(),
                  onev = _mm256_set1_pd(1.0);
    __m256d hi[6], lo[6], acc[6];
    for (int q = 0; q < 6; q++) hi[q] = lo[q] = acc[q] = zero;
    int bad = 0, nacc = 0;
    int64_t n0 = 0;
    for (Py_ssize_t j = 0; j < C; j += 4) {
        Py_ssize_t n = C - j < 4 ? C - j : 4;
        __m128i act = _mm_cmplt_epi32(_mm_setr_epi32(0, 1, 2, 3), _mm_set1_epi32((int)n));
        __m256i act64 = _mm256_cvtepi32_epi64(act);
        int actb = (1 << n) - 1;
        /* absent lanes read m and t = 0: they add nothing */
        __m256d d = _mm256_sub_pd(
            _mm256_cvtps_pd(_mm_blendv_ps(_mm_set1_ps((float)m), _mm_maskload_ps(x + j, act),
                                          _mm_castsi128_ps(act))), mv);
        __m256d e = x3_exp(d);
        __m256d top = _mm256_cmp_pd(d, zero, _CMP_EQ_OQ);
        n0 += __builtin_popcount((unsigned)(_mm256_movemask_pd(top) & actb));
        /* a full store (eb has 4 doubles to spare): vmaskmovpd stores are slow on AMD */
        _mm256_storeu_pd(ebuf + j, _mm256_blendv_pd(e, onev, top));
        __m256d tv = T64 ? _mm256_maskload_pd((const double *)t + j, act64)
                         : _mm256_cvtps_pd(_mm_maskload_ps((const float *)t + j, act));
        bad |= _mm256_movemask_pd(_mm256_cmp_pd(tv, zero, _CMP_NGE_UQ)) & actb;  /* t < 0, NaN */
        __m256d a = _mm256_add_pd(_mm256_mul_pd(k1, tv), k0);
        if (HAS_W) a = _mm256_mul_pd(a, _mm256_maskload_pd(w + j, act64));
        a = _mm256_and_pd(a, _mm256_castsi256_pd(act64));
        __m256d nz = _mm256_sub_pd(zero, d);
        acc[5] = _mm256_fmadd_pd(e, nz, acc[5]);
        acc[0] = _mm256_add_pd(acc[0], e);
        acc[1] = _mm256_add_pd(acc[1], a);
        acc[2] = _mm256_fmadd_pd(a, nz, acc[2]);
        acc[3] = _mm256_add_pd(acc[3], tv);
        acc[4] = _mm256_fmadd_pd(tv, nz, acc[4]);
        if (++nacc == 4 || j + 4 >= C) {  /* 4 terms per lane, then into the double-doubles */
            for (int q = 0; q < 6; q++) { x3_two_sum(&hi[q], &lo[q], acc[q]); acc[q] = zero; }
            nacc = 0;
        }
    }
    double h[6 * 4], l4[6 * 4];
    for (int q = 0; q < 6; q++) {
        _mm256_storeu_pd(h + 4 * q, hi[q]);
        _mm256_storeu_pd(l4 + 4 * q, lo[q]);
    }
    xp_lanes_merge(h, l4, 4, S);
    S->bad = bad != 0;
    S->n0 = n0;
    S->inf_a = S->inf_t = 0;  /* exact rows have no -inf */
}

AI3 void xp_rows_x3_tt(const xp_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb,
                       const int DT, const int T64, const int HAS_W) {
    Py_ssize_t C = A->C;
    size_t isz = (size_t)ITEMSIZE[DT], tsz = T64 ? 8 : 4;
    for (Py_ssize_t r = r0; r < r1; r++) {
        const char *x = (const char *)A->x + (size_t)r * C * isz;
        const char *t = (const char *)A->t + (size_t)r * C * tsz;
        const float *xf = xr_widen(x, C, A->fbuf, DT);
        Py_ssize_t y = target_argmax(t, C, T64);
        A->true_class[r] = y;
        x4_pass1_t P;
        x3_pass1(xf, C, xf[y], &P);
        if (P.special) { xp_hand_back(A, r, t, nfb, T64); continue; }
        double m = (double)P.m, xy = (double)xf[y];
        xp_sums S;
        if (P.exact) {
            x3_prob_sweep(A, xf, t, m, &S, T64, HAS_W);
            S.kfirst = P.k;
            S.above = P.above;
            S.m2 = (double)P.m2;
        } else {
            xp_sweep(A, x, t, m, xy, &S, DT, T64, HAS_W, 1);
        }
        A->tsum[r] = S.bad ? NAN : S.st.hi + S.st.lo;
        if (S.bad) { A->fallback[r] = 1; (*nfb)++; continue; }
        A->fallback[r] = 0;
        xp_finish(A, r, x, t, m, y, xy, &S, DT, T64, HAS_W, 1);
    }
}

SMX_V3 static void xp_rows_x3(const xp_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb,
                              int dt) {
#define X3_TT(D)                                                               \
    if (A->t64) {                                                              \
        if (A->weight) xp_rows_x3_tt(A, r0, r1, nfb, D, 1, 1);                 \
        else xp_rows_x3_tt(A, r0, r1, nfb, D, 1, 0);                           \
    } else {                                                                   \
        if (A->weight) xp_rows_x3_tt(A, r0, r1, nfb, D, 0, 1);                 \
        else xp_rows_x3_tt(A, r0, r1, nfb, D, 0, 0);                           \
    }
    switch (dt) {
    case DT_F16: X3_TT(DT_F16) break;
    case DT_BF16: X3_TT(DT_BF16) break;
    case DT_F32: X3_TT(DT_F32) break;
    default: xp_rows_kernel_v3(A, r0, r1, nfb, dt); break;
    }
#undef X3_TT
}
#endif

/* the two-pass rows when the AVX-512 or AVX2 variant runs (16/32-bit logits,
 * C < 2^31 - 16) */
static void xp_rows_run(const xp_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, int dt) {
#if SMX_X86
    if (g_isa == ISA_AVX512 && A->C < INT32_MAX - 16) { xp_rows_x4(A, r0, r1, nfb, dt); return; }
    if (g_isa == ISA_AVX2 && A->C < INT32_MAX - 16) { xp_rows_x3(A, r0, r1, nfb, dt); return; }
#endif
    xp_rows_kernel(A, r0, r1, nfb, dt);
}

/* ------------------------------------------------------------------------ */
/* the gradient of each sample's loss, A p - a, one row at a time           */
/*
 * loss = -sum_c a_c logp_c (index targets: a_c = (eps/C) w_c + (1 - eps) w_y
 * [c == y], 0 for an ignored sample; probability targets: a_c = w_c ((1 - eps)
 * t_c + eps/C)), so dloss/dx_c = A p_c - a_c with A = sum_c a_c, evaluated as
 * p_c (A - a_c) - a_c (1 - p_c): no cancellation at p ~ 1 (a saturated sample
 * keeps its tiny gradient relatively accurate). From the logits: m, the first
 * argmax k and L = log1p(sum_{j != k} exp(x_j - m)) as a double-double
 * (rest_lse: absolute error ~0.2 u); p_c = exp(s)(1 + (e + c_x - L_lo)) with
 * s = fl(z_c - L_hi), e its TwoSum error and c_x the shift's (exp_hl: 0.15 u),
 * so p_c is within ~2 u relative whatever |logp_c|; 1 - p_k = -expm1(-L)
 * (libm, <= 1 ulp, plus L_lo's first-order term) and 1 - p_c = fl(1 - p_c)
 * for c != k (p_c <= 1/2 there). Each entry: within ~6 u of |p_c (A - a_c)|
 * + |a_c (1 - p_c)| (asserted: 16 u).
 */
typedef struct {
    const void *x;
    Py_ssize_t C;
    const int64_t *y;       /* index targets, or NULL */
    const void *t;          /* probability targets (float64 if t64, else float32), or NULL */
    int t64;
    const double *weight;   /* NULL: 1 */
    double wsum;            /* sum of the weights (C without) */
    double eps;
    int64_t ignore_index;
    double *out;            /* (N, C) float64 */
    uint8_t *fallback;
} xg_args;

AI void xg_rows_tt(const xg_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, const int DT,
                   const int PROB, const int T64, const int USE_FMA) {
    Py_ssize_t C = A->C;
    size_t isz = (size_t)ITEMSIZE[DT], tsz = T64 ? 8 : 4;
    const double *w = A->weight;
    double eps = A->eps, k0 = eps / (double)C, k1 = 1.0 - eps;
    for (Py_ssize_t r = r0; r < r1; r++) {
        const char *x = (const char *)A->x + (size_t)r * C * isz;
        double *g = A->out + (size_t)r * C;
        int has_nan;
        double m = row_max(x, 0, C, &has_nan, DT);
        if (has_nan || !isfinite(m)) { A->fallback[r] = 1; (*nfb)++; continue; }
        A->fallback[r] = 0;
        const char *t = PROB ? (const char *)A->t + (size_t)r * C * tsz : NULL;
        int64_t y = PROB ? -1 : A->y[r];
        if (!PROB && y == A->ignore_index) {
            for (Py_ssize_t j = 0; j < C; j++) g[j] = 0.0;
            continue;
        }
        Py_ssize_t k = first_index(x, C, m, DT);
        double lh, ll, m2;
        rest_lse(x, C, k, m, 1.0, &lh, &ll, &m2, NULL, NULL, DT, 0, USE_FMA, 0);
        double omk = -expm1(-lh);
        omk += ll * (1.0 - omk);      /* d(1 - exp(-L))/dL = exp(-L) */
        double wy = 0.0, big_a;
        if (!PROB) {
            wy = w ? w[y] : 1.0;
            big_a = (eps > 0.0 ? k0 * A->wsum : 0.0) + k1 * wy;
        } else {
            dd_t sa = {0.0, 0.0};
            for (Py_ssize_t j = 0; j < C; j++) {
                double tv = ldt(t, j, T64);
                double ts = eps > 0.0 ? tv * k1 + k0 : tv;
                dd_add(&sa, w ? ts * w[j] : ts);
            }
            big_a = sa.hi + sa.lo;
        }
        for (Py_ssize_t j = 0; j < C; j++) {
            double q, c;
            shifted(ld(x, j, DT), m, 1.0, &q, &c, 0, USE_FMA);
            double s = q - lh, bv = s - q;
            double e1 = (q - (s - bv)) + (-lh - bv);
            double eh, el;
            exp_hl(s, &eh, &el, USE_FMA);
            double p = eh + (el + eh * ((e1 + c) - ll));
            if (q == -INFINITY) p = 0.0;
            double a;
            if (PROB) {
                double tv = ldt(t, j, T64);
                double ts = eps > 0.0 ? tv * k1 + k0 : tv;
                a = w ? ts * w[j] : ts;
            } else {
                a = eps > 0.0 ? k0 * (w ? w[j] : 1.0) : 0.0;
                if (j == y) a += k1 * wy;
            }
            double om = j == k ? omk : 1.0 - p;
            g[j] = p * (big_a - a) - (a > 0.0 ? a * om : 0.0);
        }
    }
}

AI void xg_rows_t(const xg_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, const int DT,
                  const int USE_FMA) {
    if (!A->t) xg_rows_tt(A, r0, r1, nfb, DT, 0, 0, USE_FMA);
    else if (A->t64) xg_rows_tt(A, r0, r1, nfb, DT, 1, 1, USE_FMA);
    else xg_rows_tt(A, r0, r1, nfb, DT, 1, 0, USE_FMA);
}

AI void xg_rows_kernel_t(const xg_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, int dt,
                         const int USE_FMA) {
    DISPATCH_DT(xg_rows_t, A, r0, r1, nfb)
}
VARIANTS(xg_rows_kernel, (const xg_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, int dt),
         A, r0, r1, nfb, dt)

/* ------------------------------------------------------------------------ */
/* Python glue: cross-entropy                                               */

/* xent(x, dt, n, c, target, weight|None, wsum, ignore_index, eps, r0, r1,
 *      loss, logp_true, p_true, argmax, top5, margin, entropy, fallback) -> n_fallback */
static PyObject *py_xent(PyObject *self, PyObject *args) {
    PyObject *xo, *to, *wo, *outs[8];
    int dt;
    Py_ssize_t n, c, r0, r1;
    long long ign;
    double wsum, eps;
    if (!PyArg_ParseTuple(args, "OinnOOdLdnnOOOOOOOO", &xo, &dt, &n, &c, &to, &wo, &wsum, &ign, &eps,
                          &r0, &r1, &outs[0], &outs[1], &outs[2], &outs[3], &outs[4], &outs[5],
                          &outs[6], &outs[7]))
        return NULL;
    if (check_rows(dt, n, c, r0, r1) < 0) return NULL;
    if (c < 1) { PyErr_SetString(PyExc_ValueError, "no classes"); return NULL; }
    Py_buffer bufs[11];
    int nb = 0, ok = 1;
    Py_ssize_t sizes[8] = {8, 8, 8, 8, 1, 8, 8, 1};
    if (get_buf(xo, &bufs[nb], 0, n * c * ITEMSIZE[dt], "x") < 0) return NULL;
    nb++;
    if (get_buf(to, &bufs[nb], 0, n * 8, "target") < 0) ok = 0; else nb++;
    int have_w = wo != Py_None;
    if (ok && have_w) { if (get_buf(wo, &bufs[nb], 0, c * 8, "weight") < 0) ok = 0; else nb++; }
    for (int i = 0; ok && i < 8; i++) {
        if (get_buf(outs[i], &bufs[nb], 1, n * sizes[i], "output") < 0) ok = 0; else nb++;
    }
    if (!ok) { for (int i = 0; i < nb; i++) PyBuffer_Release(&bufs[i]); return NULL; }
    int o0 = have_w ? 3 : 2;
    /* check the targets here (with the GIL): in [0, C) or ignore_index */
    const int64_t *tg = (const int64_t *)bufs[1].buf;
    for (Py_ssize_t r = r0; r < r1; r++) {
        if (tg[r] != ign && (tg[r] < 0 || tg[r] >= c)) {
            PyErr_Format(PyExc_ValueError, "target %lld of row %zd is out of range [0, %zd)",
                         (long long)tg[r], r, c);
            for (int i = 0; i < nb; i++) PyBuffer_Release(&bufs[i]);
            return NULL;
        }
    }
    const double *w = have_w ? (const double *)bufs[2].buf : NULL;
    /* scratch: a widened 16-bit row; max(w, 0) for the smoothing sum */
    float *fbuf = dt == DT_F16 || dt == DT_BF16 ? (float *)malloc(sizeof(float) * (size_t)c) : NULL;
    double *wpos = w && eps > 0.0 ? (double *)malloc(sizeof(double) * (size_t)c) : NULL;
    if ((dt == DT_F16 || dt == DT_BF16) && !fbuf) ok = 0;
    if (w && eps > 0.0 && !wpos) ok = 0;
    if (!ok) {
        free(fbuf);
        free(wpos);
        for (int i = 0; i < nb; i++) PyBuffer_Release(&bufs[i]);
        return PyErr_NoMemory();
    }
    if (wpos) for (Py_ssize_t j = 0; j < c; j++) wpos[j] = w[j] > 0.0 ? w[j] : 0.0;
    xe_args A = {bufs[0].buf, c, tg, w, wsum,
                 (int64_t)ign, eps,
                 (double *)bufs[o0 + 0].buf, (double *)bufs[o0 + 1].buf, (double *)bufs[o0 + 2].buf,
                 (double *)bufs[o0 + 5].buf, (double *)bufs[o0 + 6].buf,
                 (int64_t *)bufs[o0 + 3].buf, (uint8_t *)bufs[o0 + 4].buf, (uint8_t *)bufs[o0 + 7].buf,
                 fbuf, wpos};
    int64_t nfb = 0;
    Py_BEGIN_ALLOW_THREADS
    xent_rows_run(&A, r0, r1, &nfb, dt);
    Py_END_ALLOW_THREADS
    free(fbuf);
    free(wpos);
    for (int i = 0; i < nb; i++) PyBuffer_Release(&bufs[i]);
    return PyLong_FromLongLong((long long)nfb);
}

/* xent_prob(x, dt, n, c, t, t64, weight|None, eps, r0, r1, loss, nll, logp_true, p_true,
 *           margin, entropy, residual, argmax, true_class, top5, fallback, target_sum)
 *   -> n_fallback */
static PyObject *py_xent_prob(PyObject *self, PyObject *args) {
    PyObject *xo, *to, *wo, *outs[12];
    int dt, t64;
    Py_ssize_t n, c, r0, r1;
    double eps;
    if (!PyArg_ParseTuple(args, "OinnOiOdnnOOOOOOOOOOOO", &xo, &dt, &n, &c, &to, &t64, &wo, &eps,
                          &r0, &r1, &outs[0], &outs[1], &outs[2], &outs[3], &outs[4], &outs[5],
                          &outs[6], &outs[7], &outs[8], &outs[9], &outs[10], &outs[11]))
        return NULL;
    if (check_rows(dt, n, c, r0, r1) < 0) return NULL;
    if (c < 1) { PyErr_SetString(PyExc_ValueError, "no classes"); return NULL; }
    Py_buffer bufs[15];
    int nb = 0, ok = 1;
    Py_ssize_t sizes[12] = {8, 8, 8, 8, 8, 8, 8, 8, 8, 1, 1, 8};
    if (get_buf(xo, &bufs[nb], 0, n * c * ITEMSIZE[dt], "x") < 0) return NULL;
    nb++;
    if (get_buf(to, &bufs[nb], 0, n * c * (t64 ? 8 : 4), "target") < 0) ok = 0; else nb++;
    int have_w = wo != Py_None;
    if (ok && have_w) { if (get_buf(wo, &bufs[nb], 0, c * 8, "weight") < 0) ok = 0; else nb++; }
    for (int i = 0; ok && i < 12; i++) {
        if (get_buf(outs[i], &bufs[nb], 1, n * sizes[i], "output") < 0) ok = 0; else nb++;
    }
    /* eb: 4 doubles to spare for the AVX2 sweep's full-vector stores */
    double *eb = ok ? (double *)malloc(sizeof(double) * ((size_t)c + 4)) : NULL;
    float *fb = ok ? (float *)malloc(sizeof(float) * (size_t)c) : NULL;
    if (ok && (!eb || !fb)) { ok = 0; free(eb); free(fb); PyErr_NoMemory(); }
    if (!ok) { for (int i = 0; i < nb; i++) PyBuffer_Release(&bufs[i]); return NULL; }
    int o0 = have_w ? 3 : 2;
    double *d[7];
    for (int i = 0; i < 7; i++) d[i] = (double *)bufs[o0 + i].buf;
    xp_args A = {bufs[0].buf, c, bufs[1].buf, t64 ? 1 : 0,
                 have_w ? (const double *)bufs[2].buf : NULL, eps,
                 d[0], d[1], d[2], d[3], d[4], d[5], d[6],
                 (int64_t *)bufs[o0 + 7].buf, (int64_t *)bufs[o0 + 8].buf,
                 (uint8_t *)bufs[o0 + 9].buf, (uint8_t *)bufs[o0 + 10].buf, eb,
                 (double *)bufs[o0 + 11].buf, fb};
    int64_t nfb = 0;
    Py_BEGIN_ALLOW_THREADS
    xp_rows_run(&A, r0, r1, &nfb, dt);
    Py_END_ALLOW_THREADS
    free(eb);
    free(fb);
    for (int i = 0; i < nb; i++) PyBuffer_Release(&bufs[i]);
    return PyLong_FromLongLong((long long)nfb);
}


/* xent_grad(x, dt, n, c, target, prob, t64, weight|None, wsum, ignore_index, eps, r0, r1,
 *           out, fallback) -> n_fallback; target: int64 (N,) labels (prob = 0) or (N, C)
 *           float32/float64 probabilities (prob = 1); out (N, C) float64 */
static PyObject *py_xent_grad(PyObject *self, PyObject *args) {
    PyObject *xo, *to, *wo, *oo, *fo;
    int dt, prob, t64;
    Py_ssize_t n, c, r0, r1;
    long long ign;
    double wsum, eps;
    if (!PyArg_ParseTuple(args, "OinnOiiOdLdnnOO", &xo, &dt, &n, &c, &to, &prob, &t64, &wo, &wsum,
                          &ign, &eps, &r0, &r1, &oo, &fo))
        return NULL;
    if (check_rows(dt, n, c, r0, r1) < 0) return NULL;
    if (c < 1) { PyErr_SetString(PyExc_ValueError, "no classes"); return NULL; }
    Py_buffer bufs[5];
    int nb = 0, ok = 1;
    if (get_buf(xo, &bufs[nb], 0, n * c * ITEMSIZE[dt], "x") < 0) return NULL;
    nb++;
    if (get_buf(to, &bufs[nb], 0, prob ? n * c * (t64 ? 8 : 4) : n * 8, "target") < 0) ok = 0;
    else nb++;
    int have_w = wo != Py_None;
    if (ok && have_w) { if (get_buf(wo, &bufs[nb], 0, c * 8, "weight") < 0) ok = 0; else nb++; }
    if (ok) { if (get_buf(oo, &bufs[nb], 1, n * c * 8, "out") < 0) ok = 0; else nb++; }
    if (ok) { if (get_buf(fo, &bufs[nb], 1, n, "fallback") < 0) ok = 0; else nb++; }
    if (!ok) { for (int i = 0; i < nb; i++) PyBuffer_Release(&bufs[i]); return NULL; }
    int o0 = have_w ? 3 : 2;
    if (!prob) {  /* the labels: in [0, C) or ignore_index */
        const int64_t *tg = (const int64_t *)bufs[1].buf;
        for (Py_ssize_t r = r0; r < r1; r++) {
            if (tg[r] != ign && (tg[r] < 0 || tg[r] >= c)) {
                PyErr_Format(PyExc_ValueError, "target %lld of row %zd is out of range [0, %zd)",
                             (long long)tg[r], r, c);
                for (int i = 0; i < nb; i++) PyBuffer_Release(&bufs[i]);
                return NULL;
            }
        }
    }
    xg_args A = {bufs[0].buf, c, prob ? NULL : (const int64_t *)bufs[1].buf,
                 prob ? bufs[1].buf : NULL, t64 ? 1 : 0,
                 have_w ? (const double *)bufs[2].buf : NULL, wsum, eps, (int64_t)ign,
                 (double *)bufs[o0].buf, (uint8_t *)bufs[o0 + 1].buf};
    int64_t nfb = 0;
    Py_BEGIN_ALLOW_THREADS
    xg_rows_kernel(&A, r0, r1, &nfb, dt);
    Py_END_ALLOW_THREADS
    for (int i = 0; i < nb; i++) PyBuffer_Release(&bufs[i]);
    return PyLong_FromLongLong((long long)nfb);
}


#endif
