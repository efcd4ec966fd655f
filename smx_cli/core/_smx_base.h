/* _smx_base.h: what every kernel shares: rounding to the 16-bit
 * formats, error-free transformations, exp as hi + lo and as one word, log1p
 * as a double-double, row maxima, the compensated exp sums, DISPATCH_DT and
 * the row-range check.
 * Included once, by _smx_native.c (one translation unit, so every kernel
 * inlines into each CPU variant); not a public header. */
#ifndef SMX_BASE_H
#define SMX_BASE_H

#define LANES 8


/* ------------------------------------------------------------------------ */
/* bits                                                                      */

/* float64 -> float16, round to nearest even, in one rounding */
AI uint16_t f64_to_f16(double x) {
    uint64_t u = asu64(x);
    uint16_t sign = (uint16_t)((u >> 48) & 0x8000u);
    uint64_t a = u & 0x7fffffffffffffffull;
    double ax = asf64(a);
    /* normal range (|x| >= 2^-14): rebias, round the 52-bit mantissa to 10 */
    uint64_t reb = a - ((uint64_t)(1023 - 15) << 52);
    uint64_t rnd = (reb + ((1ull << 41) - 1) + ((reb >> 42) & 1)) >> 42;
    /* subnormal range: round |x| to a multiple of 2^-24 by one addition */
    double s = ax + 0x1p28;
    uint64_t sub = asu64(s) - asu64(0x1p28);
    uint64_t r = (ax < 0x1p-14) ? sub : rnd;
    r = (ax >= 65520.0) ? 0x7c00u : r;           /* overflow -> inf */
    r = (x != x) ? 0x7e00u : r;                   /* NaN */
    return (uint16_t)(r | sign);
}

/* float64 -> bfloat16, round to nearest even, in one rounding */
AI uint16_t f64_to_bf16(double x) {
    uint64_t u = asu64(x);
    uint16_t sign = (uint16_t)((u >> 48) & 0x8000u);
    uint64_t a = u & 0x7fffffffffffffffull;
    double ax = asf64(a);
    uint64_t reb = a - ((uint64_t)(1023 - 127) << 52);
    uint64_t rnd = (reb + ((1ull << 44) - 1) + ((reb >> 45) & 1)) >> 45;
    double s = ax + 0x1p-81;                      /* multiples of 2^-133 */
    uint64_t sub = asu64(s) - asu64(0x1p-81);
    uint64_t r = (ax < 0x1p-126) ? sub : rnd;
    r = (ax >= 0x1p128) ? 0x7f80u : r;
    r = (x != x) ? 0x7fc0u : r;
    return (uint16_t)(r | sign);
}

AI void st(void *p, Py_ssize_t j, double v, const int DT) {
    switch (DT) {
    case DT_F16: ((uint16_t *)p)[j] = f64_to_f16(v); break;
    case DT_BF16: ((uint16_t *)p)[j] = f64_to_bf16(v); break;
    case DT_F32: ((float *)p)[j] = (float)v; break;
    default: ((double *)p)[j] = v; break;
    }
}

/* is the stored value a zero (used for the underflow count) */
AI int st_is_zero(double v, const int DT) {
    switch (DT) {
    case DT_F16: return (f64_to_f16(v) & 0x7fffu) == 0;
    case DT_BF16: return (f64_to_bf16(v) & 0x7fffu) == 0;
    case DT_F32: return (float)v == 0.0f;
    default: return v == 0.0;
    }
}

/* log of half the smallest subnormal of the format: a log-probability below
 * this is a probability that rounds to 0 in the format */
static const double LOG_UNDER[4] = {
    -17.328679513998633,  /* ln 2^-25  (float16)  */
    -92.88123235939186,   /* ln 2^-134 (bfloat16) */
    -103.97207708399179,  /* ln 2^-150 (float32)  */
    -744.44007192138126,  /* ln 2^-1075 (float64) */
};

/* ------------------------------------------------------------------------ */
/* error-free transformations                                                */

#define SPLITTER 134217729.0 /* 2^27 + 1 */

typedef struct { double hi, lo; } dd_t;

AI void dd_add(dd_t *a, double b) {  /* TwoSum into a double-double */
    double s = a->hi + b, bv = s - a->hi;
    double e = (a->hi - (s - bv)) + (b - bv);
    a->hi = s;
    a->lo += e;
}

/* the n lane double-doubles t[] merged into one float64 (TwoSum of the hi
 * words, the lo words summed plainly: their own error is O(n u^2)) */
AI double dd_total(const dd_t *t, int n) {
    dd_t s = {0.0, 0.0};
    for (int l = 0; l < n; l++) { dd_add(&s, t[l].hi); s.lo += t[l].lo; }
    return s.hi + s.lo;
}

/* a*b - p exactly (p = fl(a*b)); FMA when USE_FMA, else Dekker/Veltkamp */
AI double prod_err(double a, double b, double p, const int USE_FMA) {
    if (USE_FMA) return fma(a, b, -p);
    double as = a * SPLITTER, ah = as - (as - a), al = a - ah;
    double bs = b * SPLITTER, bh = bs - (bs - b), bl = b - bh;
    return ((ah * bh - p) + ah * bl + al * bh) + al * bl;
}

/* ------------------------------------------------------------------------ */
/* exp as hi + lo                                                            */

#define LOG2E 0x1.71547652b82fep0
#define LN2HI 0x1.62e42feep-1          /* fdlibm ln2_hi: k * LN2HI exact for |k| < 2^21 */
#define LN2LO 0x1.a39ef35793c76p-33
#define SHIFT 0x1.8p52

/* Q(r) with exp(r) = 1 + r + r^2 Q(r): Taylor coefficients 1/n!, n = 2..13
 * (|r| <= ln2/2: truncation below 2^-58) */
#define FMA_(a, b, c, USE_FMA) ((USE_FMA) ? fma((a), (b), (c)) : (a) * (b) + (c))
AI double expq(double r, const int USE_FMA) {
    /* Estrin's scheme: short dependency chains (the loop is latency bound) */
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    double c01 = FMA_(1.0 / 6.0, r, 0.5, USE_FMA);
    double c23 = FMA_(1.0 / 120.0, r, 1.0 / 24.0, USE_FMA);
    double c45 = FMA_(1.0 / 5040.0, r, 1.0 / 720.0, USE_FMA);
    double c67 = FMA_(1.0 / 362880.0, r, 1.0 / 40320.0, USE_FMA);
    double c89 = FMA_(1.0 / 39916800.0, r, 1.0 / 3628800.0, USE_FMA);
    double cab = FMA_(1.0 / 6227020800.0, r, 1.0 / 479001600.0, USE_FMA);
    double c03 = FMA_(c23, r2, c01, USE_FMA);
    double c47 = FMA_(c67, r2, c45, USE_FMA);
    double c8b = FMA_(cab, r2, c89, USE_FMA);
    double c07 = FMA_(c47, r4, c03, USE_FMA);
    return FMA_(c8b, r8, c07, USE_FMA);
}

/* exp(x) * 2^K = *hi + *lo, relative error ~0.15 u of the pair; x = -inf or
 * below -1000 gives 0 whatever K is, x >= 710 gives inf, NaN propagates.
 * Branch-free. K in [0, 1000] scales exactly (tiny terms keep their lo word
 * out of the subnormal range); callers scale by 2^K only when the row's top
 * term is >= e^-745, against which terms below e^-1000 are negligible (and
 * zero, not e^-1000 2^K, so a huge correction c of such a term, e.g. 1e284 for
 * (x - m)/t ~ -3e300, cannot be multiplied into the sum). */
AI void exp_hl_scaled(double x, int64_t K, double *hi, double *lo, const int USE_FMA) {
    const int gone = x < -1000.0;
    x = gone ? -1000.0 : x;
    x = x > 710.0 ? 710.0 : x;
    double kd = x * LOG2E + SHIFT;
    uint64_t ki = asu64(kd);
    kd -= SHIFT;
    double rh = x - kd * LN2HI; /* exact (Sterbenz; kd * LN2HI exact) */
    double rl = -kd * LN2LO;
    double r = rh + rl;
    double rr = (rh - r) + rl;
    double h = 1.0 + r;
    double l = (1.0 - h) + r;   /* Fast2Sum(1, r): exact */
    l += (r * r) * expq(r, USE_FMA) + rr * h;
    double ph = h + l;
    double pl = l - (ph - h);
    int64_t k = (int64_t)(ki - asu64(SHIFT)) + K;
    int64_t k1 = (int64_t)((uint64_t)(k + 4096) >> 1) - 2048;
    int64_t k2 = k - k1;
    double s1 = asf64((uint64_t)(k1 + 1023) << 52);
    double s2 = asf64((uint64_t)(k2 + 1023) << 52);
    *hi = gone ? 0.0 : (ph * s1) * s2;   /* the first product is exact, the second rounds once */
    *lo = gone ? 0.0 : (pl * s1) * s2;
}

AI void exp_hl(double x, double *hi, double *lo, const int USE_FMA) {
    exp_hl_scaled(x, 0, hi, lo, USE_FMA);
}

/* exp(q) for q <= 0 as ONE float64 (the 16/32-bit path), 0 for q < -708 and
 * q = -inf. Cody-Waite: k = rint(q log2e) (|k| <= 1022, so 2^k is normal and
 * the scaling exact), r = (q - k LN2HI) - k LN2LO with the first step exact,
 * |r| <= 0.3466, |error of r| <= 2^-54 (one rounding; LN2HI + LN2LO = ln 2
 * within 2^-86); exp(r) = 1 + (r + r^2 Q(r)), Q the Taylor polynomial to
 * r^11/13! (truncation < 2^-52). Relative error: r's rounding (<= 2^-54),
 * the truncation, the polynomial's roundings (|r^2 Q| < 0.07, a few u of it)
 * and the final 1 + t (0.5 u): about 1.2 ulp of float64 with or without FMA;
 * the budgets below use 2^-50. */
AI double exp1(double q, const int USE_FMA) {
    double qc = q < -708.0 ? -708.0 : q;
    double kd = qc * LOG2E + SHIFT;
    uint64_t ki = asu64(kd);
    kd -= SHIFT;
    double r = qc - kd * LN2HI;   /* exact */
    r = FMA_(-kd, LN2LO, r, USE_FMA);
    double p = 1.0 + FMA_(r * r, expq(r, USE_FMA), r, USE_FMA);
    double s = asf64((ki - asu64(SHIFT) + 1023) << 52);
    return q < -708.0 ? 0.0 : p * s;
}

/* log1p(S_hi + S_lo) as a double-double (*lh + *ll), S >= 0 */
static void log1p_dd(double sh, double sl, double *lh, double *ll) {
    if (!(sh > 0.0)) { *lh = sh == 0.0 ? 0.0 : sh; *ll = 0.0; return; }
    if (isinf(sh)) { *lh = INFINITY; *ll = 0.0; return; }
    double y = log1p(sh);
    double delta;
    if (y < 0.34) {
        /* expm1(y) = y + t, t = y^2 Q(y) (relative error ~u t); Newton:
         * L = y + (S - expm1(y)) / (1 + S) */
        double t = (y * y) * expq(y, 0);
        double num = ((sh - y) - t) + sl; /* sh - y exact (Sterbenz) */
        delta = num / (1.0 + sh);
    } else {
        double eh, el;
        exp_hl(y, &eh, &el, 0);
        double a = 1.0 + sh, b = (a - 1.0);
        double ae = (1.0 - (a - b)) + (sh - b); /* TwoSum(1, sh) error */
        double num = (a - eh) + ((ae + sl) - el); /* a - eh exact (Sterbenz) */
        delta = num / eh;
    }
    double h = y + delta;
    *lh = h;
    *ll = delta - (h - y);
}

/* ------------------------------------------------------------------------ */
/* row helpers                                                               */

/* max over x[j0:j1] and whether a NaN was seen (then the max is meaningless).
 * The max is taken on integer keys (the float64 bits with the magnitude bits
 * flipped for negative numbers: monotone in the value), because integer max
 * is a reduction gcc vectorises; max(-0, +0) = +0. */
AI int64_t order_key(int64_t b) { return b ^ (int64_t)((uint64_t)(b >> 63) >> 1); }

AI double row_max(const void *x, Py_ssize_t j0, Py_ssize_t j1, int *has_nan, const int DT) {
    int64_t km = INT64_MIN, nanf = 0;
    for (Py_ssize_t j = j0; j < j1; j++) {
        double v = ld(x, j, DT);
        int64_t key = order_key((int64_t)asu64(v));
        km = key > km ? key : km;
        nanf |= v != v;
    }
    if (has_nan) *has_nan = nanf != 0;
    return j1 > j0 ? asf64((uint64_t)order_key(km)) : -INFINITY;
}

AI Py_ssize_t first_index(const void *x, Py_ssize_t C, double m, const int DT) {
    for (Py_ssize_t j = 0; j < C; j++)
        if (ld(x, j, DT) == m) return j;
    return 0;
}

/* z = (x - m)/t as q + c (c the rounding errors); -inf entries give c = 0 */
AI void shifted(double xv, double m, double t, double *q, double *c, const int HAS_T,
                const int USE_FMA) {
    double d = xv - m;
    double bv = d - xv;
    double e = (xv - (d - bv)) + (-m - bv);      /* TwoSum(x, -m) */
    if (HAS_T) {
        double qq = d / t;
        double p = qq * t;
        double rem = (d - p) - prod_err(qq, t, p, USE_FMA); /* d - qq t exactly */
        e = (rem + e) / t;
        d = qq;
    }
    *q = d;
    /* -inf entries carry no error; Dekker's split overflows for |d| > ~1e300
     * (baseline CPUs): there the correction (< 1 ulp of |q| > 1e290) is dropped */
    *c = (e - e == 0.0) ? e : 0.0;
}

typedef struct { double hi, lo, dot; } sums_t;

#define DOT_BLK 4

/* sum of exp(z_j) over j in [j0, j1) (hi + lo pair parts, to be combined),
 * grid 1.5 * 2^g; optionally stores the terms (ph, pl) and the dot
 * sum e_j * (-z_j) (entropy) */
AI void exp_sum(const void *x, Py_ssize_t j0, Py_ssize_t j1, double m, double t, double sigma,
                int64_t K,
                double *ph, double *pl, sums_t *acc_out, const int DT, const int HAS_T,
                const int USE_FMA, const int STORE, const int DOT) {
    double ah[LANES], al[LANES], ad[LANES];
    dd_t dt[LANES];  /* the dot: lanes restarted every DOT_BLK terms, block sums TwoSum'd */
    for (int l = 0; l < LANES; l++) { ah[l] = 0.0; al[l] = 0.0; ad[l] = 0.0; dt[l].hi = dt[l].lo = 0.0; }
    Py_ssize_t j = j0;
#define EXP_BODY(J, L)                                                         \
    {                                                                          \
        double q, c, eh, el;                                                   \
        shifted(ld(x, (J), DT), m, t, &q, &c, HAS_T, USE_FMA);                 \
        exp_hl_scaled(q, K, &eh, &el, USE_FMA);                                \
        if (DT == DT_F64) {                                                    \
            el += eh * c;                                                      \
            if (STORE) { ph[(J)] = eh; pl[(J)] = el; }                         \
        } else { /* rounded to <= 24 bits later: the pair is not needed */     \
            eh += eh * c;                                                      \
            el = 0.0;                                                          \
            if (STORE) ph[(J)] = eh;                                           \
        }                                                                      \
        double g = (eh + sigma) - sigma;                                       \
        ah[L] += g;                                                            \
        al[L] += (eh - g) + el;                                                \
        if (DOT) ad[L] += (eh > 0.0) ? (eh + el) * -q : 0.0; /* el: x - m error */ \
    }
    if (DOT) {
        for (; j + DOT_BLK * LANES <= j1; j += DOT_BLK * LANES) {
            for (Py_ssize_t i = 0; i < DOT_BLK * LANES; i += LANES)
                for (int l = 0; l < LANES; l++) EXP_BODY(j + i + l, l)
            for (int l = 0; l < LANES; l++) { dd_add(&dt[l], ad[l]); ad[l] = 0.0; }
        }
    }
    for (; j + LANES <= j1; j += LANES)
        for (int l = 0; l < LANES; l++) EXP_BODY(j + l, l)
    for (; j < j1; j++) EXP_BODY(j, 0)
#undef EXP_BODY
    for (int l = 0; l < LANES; l++) {
        acc_out->hi += ah[l];
        acc_out->lo += al[l];
        dd_add(&dt[l], ad[l]);
    }
    if (DOT) acc_out->dot += dd_total(dt, LANES);
}

/* grid 1.5 * 2^g such that C terms below 2^e_top sum exactly on it */
static double grid_sigma(double top, Py_ssize_t C) {
    int e;
    frexp(top, &e);              /* top < 2^e */
    e += 1;                      /* room for the terms' lo words */
    if (e < -900) e = -900;
    int nb = 1;
    while (((Py_ssize_t)1 << nb) < C + 1) nb++;
    return ldexp(1.5, e + nb);
}

/* L = log1p(sum_{j != k} exp(z_j)) as a double-double, z_j = (x_j - m)/t, with
 * k the argmax. The grid of the split sum is scaled to the largest such term
 * (x's second maximum *m2_out), and rows of tiny terms are summed scaled by
 * an exact 2^K. Returns S = sum (*s_out, float64) and, with DOT, the entropy
 * dot product sum_j e_j (-z_j). */
AI void rest_lse(const void *x, Py_ssize_t C, Py_ssize_t k, double m, double t, double *lh,
                 double *ll, double *m2_out, double *s_out, double *dot_out, const int DT,
                 const int HAS_T, const int USE_FMA, const int DOT) {
    double m2 = -INFINITY;
    *lh = 0.0; *ll = 0.0;
    if (s_out) *s_out = 0.0;
    if (dot_out) *dot_out = 0.0;
    if (C > 1) {
        double a = row_max(x, 0, k, NULL, DT), b = row_max(x, k + 1, C, NULL, DT);
        m2 = a > b ? a : b;
    }
    *m2_out = m2;
    if (!(m2 > -INFINITY)) return;
    /* terms below e^-1000 are 0 (exp_hl_scaled): L < C e^-1000 rounds to 0 */
    double z2 = HAS_T ? (m2 - m) / t : (m2 - m);
    if (!(z2 >= -1000.0)) return;
    /* rows whose terms are all tiny are summed scaled by an exact 2^K, with K
     * from z2 itself: exp(z2) underflows to 0 below -745.13, where C such
     * terms still make L = C e^z2 many subnormal spacings */
    int e;
    if (z2 < -700.0) e = (int)floor(z2 * LOG2E) + 1;   /* 2^(e-1) <= e^z2 < 2^e, about */
    else frexp(exp(z2), &e);
    int64_t K = e < -900 ? (int64_t)(-e) : 0;     /* scale tiny terms up exactly */
    if (K > 1000) K = 1000;
    double sigma = grid_sigma(exp(z2 + (double)K * LN2HI), C);  /* e^z2 2^K, near enough for a grid */
    sums_t s = {0.0, 0.0, 0.0};
    exp_sum(x, 0, k, m, t, sigma, K, NULL, NULL, &s, DT, HAS_T, USE_FMA, 0, DOT);
    exp_sum(x, k + 1, C, m, t, sigma, K, NULL, NULL, &s, DT, HAS_T, USE_FMA, 0, DOT);
    double shi = s.hi + s.lo;   /* TwoSum: s.hi may be 0 */
    double bb = shi - s.hi;
    double slo = (s.hi - (shi - bb)) + (s.lo - bb);
    if (K) { shi = ldexp(shi, (int)-K); slo = ldexp(slo, (int)-K); s.dot = ldexp(s.dot, (int)-K); }
    log1p_dd(shi, slo, lh, ll);
    if (s_out) *s_out = shi;
    if (dot_out) *dot_out = s.dot;
}


/* ------------------------------------------------------------------------ */
/* 16/32-bit formats: single-word float64 arithmetic, rounded once          */
/*
 * (The softmax / log-softmax, VJP and online kernels sum their terms with
 * lowp_exp_sum_w in _smx_lowp.h, which has a shorter exp and its own budget;
 * this one, with exp1, is the budget of the cross-entropy's portable sweep.)
 * Error budget (relative error of the float64 value before the one rounding
 * to the output format; 2^-44 of it costs at most 2^-20 ulp of a 24-bit
 * significand, so the result is within 0.5 + 2^-20 ulp; an exact value that
 * is subnormal in the output is < 2^-126 and gets an absolute error below
 * 2^-170, far under 2^-20 of its spacing 2^-149). u = 2^-53. Let q_j be the
 * exact (x_j - m)/t; only q_j >= -88 - ln C matter (the others give outputs
 * below 2^-126, or their sum is < C e^-88 relative to S >= 1).
 *  - q = fl(x - m) [ / t ]: |error| <= |q| u (|q| 2u with t), so exp(q) is
 *    off by <= 88 * 2u = 2^-45.5 relatively (2^-46.5 without t) for outputs
 *    >= 2^-126, and the sum S by <= 2^-46.6 (the e^q-weighted mean of |q|
 *    is < 41 for C < 2^40);
 *  - exp1: <= 2^-50;
 *  - S = sum of the exp terms: plain float64 sums in LANES lane accumulators
 *    restarted every BLK terms (<= (BLK - 1) u = 2^-47 each), the block sums
 *    added as double-doubles (TwoSum), so <= 2^-47 + 2u in all;
 *  - probabilities: e * fl(1 / S): 2 roundings, 2u.
 *    Total: 2^-45.5 + 2^-50 + 2^-46.6 + 2^-50 + 2^-47 + 2^-51 < 2^-44.4.
 *  - log-probabilities: out = q - L, L = log1p(R), R = (n_max - 1) + sum of
 *    the terms with q < 0 (n_max entries equal the maximum): both q <= 0 and
 *    -L <= 0, so the subtraction does not cancel and the relative error is at
 *    most max(err q, err L) + u. err L <= err R + err log1p (glibc: 1 ulp)
 *    since R / ((1 + R) log1p(R)) <= 1, and err R <= 2^-45.3 (terms at
 *    q >= -109 when R >= 2^-126) + 2^-50 + 2^-47 + 2u: < 2^-44.6 in all.
 */
#define BLK 64




#define DISPATCH_DT(FN, ...)                                                    \
    switch (dt) {                                                               \
    case DT_F16: FN(__VA_ARGS__, DT_F16, USE_FMA); break;                       \
    case DT_BF16: FN(__VA_ARGS__, DT_BF16, USE_FMA); break;                     \
    case DT_F32: FN(__VA_ARGS__, DT_F32, USE_FMA); break;                       \
    default: FN(__VA_ARGS__, DT_F64, USE_FMA); break;                           \
    }

static int check_rows(int dt, Py_ssize_t n, Py_ssize_t c, Py_ssize_t r0, Py_ssize_t r1) {
    if (dt < 0 || dt > 3) { PyErr_SetString(PyExc_ValueError, "bad dtype code"); return -1; }
    if (n < 0 || c < 0 || r0 < 0 || r1 > n || r0 > r1) {
        PyErr_SetString(PyExc_ValueError, "bad shape or row range");
        return -1;
    }
    return 0;
}

#endif
