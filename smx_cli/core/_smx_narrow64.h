/* _smx_narrow64.h: float64 softmax of rows of C <= NARROW64_C columns and
 * log-softmax of rows of C <= NARROW64_LOG_C, vectorised across rows.
 * Included once, by _smx_softmax.h (after special_row, before softmax_rows_t);
 * not a public header.
 *
 * Blocks of NR64 rows are transposed into column-major scratch (entry (r, j)
 * at j NR64 + r), so every loop is "for j: for r" over contiguous arrays with
 * the row's values (max, scale, sums, L) indexed by r: straight-line code
 * (selects, no branches) that gcc vectorises across rows, the row sums being
 * vertical adds. One pass on order keys (row_max's, -0 read as +0 so ties are
 * first_index's) gives the max m, the first column holding it (k, the argmax)
 * and the largest other entry m2 (max over j of min(key_j, running max)).
 *
 * The arithmetic per entry is the per-row path's (softmax_row_prob,
 * softmax_row_log, rest_lse), so it keeps the float64 contract (README
 * "Accuracy": <= 1.5 ulp, log-softmax's dominant entry relative to itself).
 * u = 2^-53.
 *   shifted        x - m (/ t) as q + c: TwoSum's error of x - m (and the
 *                  exact remainder of the division), |c| <= 2u |q|;
 *   exp_hl_scaled  exp(q) 2^K as hi + lo, relative error ~0.15 u of the pair,
 *                  then lo += hi c (first order: the c^2 / 2 left out is
 *                  < 2^-90 relative for |q| <= 745);
 *   grid split     S = sum of the terms: g = (hi + sigma) - sigma, sigma =
 *                  1.5 2^(e + 1 + nb), every term below 2^e (2^e: see each
 *                  kind), 2^nb > C. The g are multiples of ulp(sigma) with
 *                  partial sums below 2^(e + nb), so they add exactly in any
 *                  order; the remainders hi - g (exact, <= ulp(sigma) / 2) and
 *                  the lo words add plainly, C additions each within u of a
 *                  partial sum <= C 2^(e + nb - 52) (+ the lo words): error
 *                  <= C^2 2^(nb + e - 105), i.e. <= C^2 2^(nb + 2) 2^-105
 *                  relative to S >= 2^(e - 2): 2^-87 for C = 32.
 * So S (the pair of the two sums) carries the per-row path's ~0.15 u; the
 * lanes only add in another order, inside that O(2^-87).
 *
 * softmax: terms <= exp(0) = 1, sigma = grid_sigma(1, C); S_hi + S_lo by
 * Fast2Sum (S_hi >= 1 > |S_lo|), out = q + (r + p_lo - q S_lo) / S_hi with
 * q = p_hi fl(1 / S_hi) and r = p_hi - q S_hi exact (prod_err): the per-row
 * path's corrected division, the same formula on the same pair.
 *
 * log-softmax: S = sum_{j != k} exp(q_j), L = log1p(S) as a double-double,
 * out_j = TwoSum(q_j, -L_hi) folded with c_j and L_lo, -inf for q_j = -inf,
 * out_k = -(L_hi + L_lo): q_j <= 0 and -L <= 0 never cancel, so each output's
 * relative error is that of q_j + c_j (O(u^2)) or of L, plus the one rounding.
 *  - the row scale without a libm call (rest_lse takes exp, frexp, ldexp):
 *    z2 = (m2 - m) / t, n = rint(z2 log2 e) (the SHIFT trick), so every
 *    non-max term is <= exp(z2) (their q are z2's roundings or below) <
 *    2^(n + 1/2) (1 + 2^-40), and e = n + 1 bounds them with a factor
 *    sqrt(2) to spare, while exp(z2) >= 2^(e - 2) (rest_lse's e is frexp's:
 *    the same or one less; the grid argument holds for either). K = -e when
 *    e < -900 (<= 1000): terms scaled by an exact 2^K keep their lo words out
 *    of the subnormal range; S is scaled back by 2^-K (one rounding, as
 *    ldexp). Rows whose m2 term underflows libm's exp (z2 < -745.13) are
 *    summed too (as in rest_lse): their L is then subnormal and within a
 *    subnormal spacing.
 *  - terms with q < -1000 are 0 in exp_hl_scaled whatever K is (negligible
 *    against the top term; with a temperature their c reaches ~1e284 and
 *    hi c would swamp S).
 *  - L = log1p_dd_v(S): rest_lse's log1p_dd with its libm log1p replaced by
 *    a vectorisable one (comment there); |L - log1p(S)| within log1p_dd's
 *    error (~0.1-0.5 u of L, the Newton step's evaluation), so out_k keeps
 *    the dominant entry's relative accuracy.
 *
 * Special rows (NaN, +inf max, all -inf) run through the loops with the max
 * set to NaN (NaN everywhere, never counted as underflows) and are then
 * rewritten by special_row, exactly as in the per-row path. Padding rows of a
 * partial block are zeros (finite, never underflow, never stored). */
#ifndef SMX_NARROW64_H
#define SMX_NARROW64_H

/* narrow rows: C <= NARROW64_C (softmax), C <= NARROW64_LOG_C (log-softmax);
 * measured against the per-row path on AVX2 and AVX-512 (100000 rows): the
 * per-row softmax is itself vectorised along the row and wins from ~24
 * columns, the per-row log-softmax pays rest_lse's libm calls per row */
#define NARROW64_C 16
#define NARROW64_LOG_C 32
#define NR64 32

/* test hook (set_narrow64): 0 sends narrow float64 rows to the per-row path */
static int g_narrow64 = 1;

/* log1p(sh + sl) as a double-double (*lh + *ll) for 0 <= sh < 2^10, branch-free
 * (vectorises across rows): log1p_dd's Newton step started from our own y
 * instead of libm's log1p.
 *   y: a = fl(1 + sh) = 2^k f, f in [sqrt(1/2), sqrt(2)) (musl's exponent
 *   trick on the bits), log f = 2 atanh(w), w = (f - 1) / (f + 1) (f - 1
 *   exact), |w| <= 0.1716, series to w^15 / 15: truncation < 2^-44 relative;
 *   y = k ln2 + log f + (sh - (a - 1)) / a, the last term the first-order
 *   correction of a's rounding (log1p sh = log a + log1p of it; the second
 *   order is < u^2). |y / log1p(sh) - 1| < 2^-43.
 *   Newton on exp(L) = 1 + S from y: y + (S - expm1 y) / (1 + S) (y < 0.34,
 *   expm1 y = y + y^2 Q(y), sh - y exact by Sterbenz) or y + ((1 + S) - e^y) /
 *   e^y (e^y = exp_hl's pair, 1 + sh as TwoSum, a - e^y exact by Sterbenz):
 *   both leave (L - y)^2 / 2 < 2^-87 L^2 plus log1p_dd's evaluation error
 *   (a few u of y^2 Q, which is <= 0.18 y for y < 0.34, or 0.15 u of e^y, in
 *   the correction), so L keeps the per-row path's accuracy: measured against
 *   mpmath on 6000 S in [1e-3, 64], max 0.50 u of L (log1p_dd: 0.57 u), both
 *   worst just above the branch point. sh = 0 gives 0; NaN gives NaN. */
AI void log1p_dd_v(double sh, double sl, double *lh, double *ll, const int USE_FMA) {
    double a = 1.0 + sh;
    double b = a - 1.0;                       /* exact */
    double cor = (sh - b) / a;
    uint64_t u = asu64(a) + (0x3ff0000000000000ull - 0x3fe6a09e00000000ull);
    int64_t k = (int64_t)(u >> 52) - 0x3ff;
    double f = asf64((u & 0x000fffffffffffffull) + 0x3fe6a09e00000000ull);
    double w = (f - 1.0) / (f + 1.0);
    double w2 = w * w, w4 = w2 * w2;
    double p01 = FMA_(1.0 / 5.0, w2, 1.0 / 3.0, USE_FMA);
    double p23 = FMA_(1.0 / 9.0, w2, 1.0 / 7.0, USE_FMA);
    double p45 = FMA_(1.0 / 13.0, w2, 1.0 / 11.0, USE_FMA);
    double p03 = FMA_(p23, w4, p01, USE_FMA);
    double p46 = FMA_(1.0 / 15.0, w4, p45, USE_FMA);
    double P = FMA_(p46, w4 * w4, p03, USE_FMA);   /* (atanh(w) / w - 1) / w^2 */
    double lf = 2.0 * w + (2.0 * w) * (w2 * P);
    double kd = (double)k;
    double y = kd * LN2HI + (lf + (kd * LN2LO + cor));
    /* Newton, small-y branch */
    double t = (y * y) * expq(y, USE_FMA);
    double d1 = (((sh - y) - t) + sl) / a;
    /* Newton, large-y branch */
    double eh, el;
    exp_hl(y, &eh, &el, USE_FMA);
    double ae = (1.0 - (a - b)) + (sh - b);   /* TwoSum(1, sh) error */
    double d2 = ((a - eh) + ((ae + sl) - el)) / eh;
    double delta = y < 0.34 ? d1 : d2;
    double h = y + delta;
    double lo = delta - (h - y);
    *lh = sh > 0.0 ? h : (sh == 0.0 ? 0.0 : sh);
    *ll = sh > 0.0 ? lo : 0.0;
}

/* rows [0, nr) of the row-major block xb (C columns) into the column-major
 * scratch xt (entry (r, j) at j NR64 + r) and back; C is a compile-time
 * constant in each case of the switch (fully unrolled column loop: measured
 * faster than the loop on a run-time C) */
AI void tr_in_c(const double *xb, double *xt, Py_ssize_t nr, const Py_ssize_t C) {
    for (Py_ssize_t r = 0; r < nr; r++)
        for (Py_ssize_t j = 0; j < C; j++) xt[j * NR64 + r] = xb[r * C + j];
}

AI void tr_out_c(const double *xt, double *ob, Py_ssize_t nr, const Py_ssize_t C) {
    for (Py_ssize_t r = 0; r < nr; r++)
        for (Py_ssize_t j = 0; j < C; j++) ob[r * C + j] = xt[j * NR64 + r];
}

#define TR_CASES(FN, A, B)                                                      \
    switch (C) {                                                                \
    case 1: FN(A, B, nr, 1); break;   case 2: FN(A, B, nr, 2); break;           \
    case 3: FN(A, B, nr, 3); break;   case 4: FN(A, B, nr, 4); break;           \
    case 5: FN(A, B, nr, 5); break;   case 6: FN(A, B, nr, 6); break;           \
    case 7: FN(A, B, nr, 7); break;   case 8: FN(A, B, nr, 8); break;           \
    case 9: FN(A, B, nr, 9); break;   case 10: FN(A, B, nr, 10); break;         \
    case 11: FN(A, B, nr, 11); break; case 12: FN(A, B, nr, 12); break;         \
    case 13: FN(A, B, nr, 13); break; case 14: FN(A, B, nr, 14); break;         \
    case 15: FN(A, B, nr, 15); break; case 16: FN(A, B, nr, 16); break;         \
    default: FN(A, B, nr, C); break;                                            \
    }

static void transpose_in(const double *xb, double *xt, Py_ssize_t nr, Py_ssize_t C) {
    TR_CASES(tr_in_c, xb, xt)
}

static void transpose_out(const double *xt, double *ob, Py_ssize_t nr, Py_ssize_t C) {
    TR_CASES(tr_out_c, xt, ob)
}

AI void narrow64_t(const sm_args *A, Py_ssize_t r0, Py_ssize_t r1, stats_t *S, const int HAS_T,
                   const int USE_FMA, const int KIND) {
    const Py_ssize_t C = A->C;
    const double t = A->t;
    /* column-major block scratch: x (then the outputs, in place), and per
     * entry (prob) exp hi / lo or (log) q / c */
    double xt[NARROW64_LOG_C * NR64], at[NARROW64_LOG_C * NR64], bt[NARROW64_LOG_C * NR64];
    double rm[NR64], mraw[NR64], kd[NR64], m2[NR64], sg[NR64], ah[NR64], al[NR64];
    double v1[NR64], v2[NR64], v3[NR64];
    int64_t kk[NR64], nanf[NR64], km[NR64], k2[NR64];
    int nb = 1;
    while (((Py_ssize_t)1 << nb) < C + 1) nb++;
    const double sigma1 = grid_sigma(1.0, C);
    const double lim = LOG_UNDER[DT_F64];
    for (Py_ssize_t rb = r0; rb < r1; rb += NR64) {
        const Py_ssize_t nr = r1 - rb < NR64 ? r1 - rb : NR64;
        const double *xb = (const double *)A->x + (size_t)rb * C;
        double *ob = (double *)A->out + (size_t)rb * C;
        transpose_in(xb, xt, nr, C);
        for (Py_ssize_t r = nr; r < NR64; r++)
            for (Py_ssize_t j = 0; j < C; j++) xt[j * NR64 + r] = 0.0;
        /* one pass on order keys (row_max's, with -0 read as +0 so that ties
         * are first_index's): the max, the first column holding it (kd), the
         * largest of the other entries (k2: max of min(key, running max)),
         * NaN flags */
        for (int r = 0; r < NR64; r++) { km[r] = INT64_MIN; k2[r] = INT64_MIN; nanf[r] = 0; kd[r] = 0.0; }
        for (Py_ssize_t j = 0; j < C; j++)
            for (int r = 0; r < NR64; r++) {
                double v = xt[j * NR64 + r];
                int64_t key = order_key((int64_t)asu64(v + 0.0));
                int64_t mo = km[r];
                /* arithmetic, not kd = up ? j : kd, which gcc turns into a
                 * masked store behind an unpredictable branch */
                kd[r] += key > mo ? (double)j - kd[r] : 0.0;
                k2[r] = k2[r] > (key < mo ? key : mo) ? k2[r] : (key < mo ? key : mo);
                km[r] = key > mo ? key : mo;
                nanf[r] |= v != v;
            }
        int anysp = 0;
        for (int r = 0; r < NR64; r++) {
            double m = asf64((uint64_t)order_key(km[r]));
            int sp = nanf[r] || !(m - m == 0.0);
            anysp |= sp;
            mraw[r] = m;
            rm[r] = sp ? NAN : m;
            m2[r] = k2[r] == INT64_MIN ? -INFINITY : asf64((uint64_t)order_key(k2[r]));
        }
        int64_t under = 0;
        if (KIND == 0) {
            for (int r = 0; r < NR64; r++) { ah[r] = 0.0; al[r] = 0.0; }
            for (Py_ssize_t j = 0; j < C; j++)
                for (int r = 0; r < NR64; r++) {
                    Py_ssize_t i = j * NR64 + r;
                    double q, c, eh, el;
                    shifted(xt[i], rm[r], t, &q, &c, HAS_T, USE_FMA);
                    exp_hl_scaled(q, 0, &eh, &el, USE_FMA);
                    el += eh * c;
                    at[i] = eh;
                    bt[i] = el;
                    double g = (eh + sigma1) - sigma1;
                    ah[r] += g;
                    al[r] += (eh - g) + el;
                }
            for (int r = 0; r < NR64; r++) {
                double shi = ah[r] + al[r];          /* Fast2Sum: ah >= 1 > |al| */
                v1[r] = shi;
                v2[r] = al[r] - (shi - ah[r]);
                v3[r] = 1.0 / shi;
            }
            for (Py_ssize_t j = 0; j < C; j++)
                for (int r = 0; r < NR64; r++) {
                    Py_ssize_t i = j * NR64 + r;
                    double h = at[i], inv = v3[r], shi = v1[r];
                    double q = h * inv;
                    double p = q * shi;
                    double rr = (h - p) - prod_err(q, shi, p, USE_FMA); /* h - q shi */
                    double v = q + ((rr + bt[i]) - q * v2[r]) * inv;
                    under += (v == 0.0) & (xt[i] > -INFINITY);
                    xt[i] = v;
                }
        } else {
            /* row scale 2^K and grid */
            for (int r = 0; r < NR64; r++) {
                double z2 = m2[r] - rm[r];
                if (HAS_T) z2 = z2 / t;
                z2 = z2 < -1100.0 ? -1100.0 : z2;
                double sh = z2 * LOG2E + SHIFT;
                int64_t e = (int64_t)(asu64(sh) - asu64(SHIFT)) + 1;
                int ok = (z2 == z2) & (m2[r] > -INFINITY);
                e = ok ? e : 0;
                int64_t K = e < -900 ? -e : 0;
                K = K > 1000 ? 1000 : K;
                int64_t g = e + K + 1;
                g = g < -900 ? -900 : g;
                kk[r] = K;
                sg[r] = 1.5 * asf64((uint64_t)(g + nb + 1023) << 52);
                ah[r] = 0.0;
                al[r] = 0.0;
            }
            for (Py_ssize_t j = 0; j < C; j++)
                for (int r = 0; r < NR64; r++) {
                    Py_ssize_t i = j * NR64 + r;
                    double q, c, eh, el;
                    shifted(xt[i], rm[r], t, &q, &c, HAS_T, USE_FMA);
                    at[i] = q;
                    bt[i] = c;
                    exp_hl_scaled(q, kk[r], &eh, &el, USE_FMA);
                    el += eh * c;
                    /* the max's own term is not in S (exp_hl_scaled gives 0
                     * for q < -1000 whatever K is) */
                    int drop = (double)j == kd[r];
                    eh = drop ? 0.0 : eh;
                    el = drop ? 0.0 : el;
                    double g = (eh + sg[r]) - sg[r];
                    ah[r] += g;
                    al[r] += (eh - g) + el;
                }
            for (int r = 0; r < NR64; r++) {
                double shi = ah[r] + al[r];   /* TwoSum: ah may be 0 */
                double bb = shi - ah[r];
                double slo = (ah[r] - (shi - bb)) + (al[r] - bb);
                double sc = asf64((uint64_t)(1023 - kk[r]) << 52);  /* 2^-K, normal */
                v1[r] = shi * sc;
                v2[r] = slo * sc;
            }
            for (int r = 0; r < NR64; r++) log1p_dd_v(v1[r], v2[r], &v1[r], &v2[r], USE_FMA);
            for (Py_ssize_t j = 0; j < C; j++)
                for (int r = 0; r < NR64; r++) {
                    Py_ssize_t i = j * NR64 + r;
                    double q = at[i], lh = v1[r], ll = v2[r];
                    double s = q - lh;
                    double bv = s - q;
                    double e1 = (q - (s - bv)) + (-lh - bv);
                    double v = s + ((e1 + bt[i]) - ll);
                    v = q == -INFINITY ? -INFINITY : v;
                    v = (double)j == kd[r] ? -(lh + ll) : v;
                    under += (v < lim) & (xt[i] > -INFINITY);
                    xt[i] = v;
                }
        }
        S->exp_underflow += under;
        transpose_out(xt, ob, nr, C);
        if (A->argmax)
            for (Py_ssize_t r = 0; r < nr; r++) A->argmax[rb + r] = (int64_t)kd[r];
        if (anysp)
            for (Py_ssize_t r = 0; r < nr; r++)
                if (rm[r] != rm[r])
                    special_row(A, xb + r * C, ob + r * C, mraw[r], (int)nanf[r], rb + r, S, DT_F64);
    }
}

AI void narrow64_rows(const sm_args *A, Py_ssize_t r0, Py_ssize_t r1, stats_t *S, const int HAS_T,
                      const int USE_FMA) {
    if (A->kind) narrow64_t(A, r0, r1, S, HAS_T, USE_FMA, 1);
    else narrow64_t(A, r0, r1, S, HAS_T, USE_FMA, 0);
}

#endif
