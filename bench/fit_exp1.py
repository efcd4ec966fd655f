"""Fit and check the polynomial of the compiled core's single-word exp (exp1w in
smx_cli/core/_smx_lowp.h): exp(r) ~ 1 + r + r^2 Q(r), Q of degree DEG, on
|r| <= R = ln2/2 + 2^-20 (the Cody-Waite reduction's range plus slack), minimax in
the RELATIVE error of exp(r), by the Remez exchange in mpmath.

    python bench/fit_exp1.py            # prints the C coefficients and the checks
    python bench/fit_exp1.py --table 16 --deg 3 --name X4E5_C
        # the AVX-512 exp with a 16-entry 2^(j/16) table (_smx_x4exp.h):
        # |r| <= ln2/32 + 2^-20, degree 5

The coefficients are rounded to float64 and the rounded polynomial is re-checked on a
dense grid plus the interval's ends and 0 at 60 digits (the approximation error alone:
the evaluation's rounding errors are bounded in the C comment).
"""
from __future__ import annotations

import sys

import mpmath as mp

mp.mp.dps = 60
DEG = 8                       # Q's degree: the polynomial 1 + r + r^2 Q is of degree 10
R = mp.log(2) / 2 + mp.mpf(2) ** -20


def poly(c, r):
    q = mp.mpf(0)
    for a in reversed(c):
        q = q * r + a
    return 1 + r + r * r * q


def rel_err(c, r):
    return poly(c, r) / mp.exp(r) - 1


def remez(deg=DEG, iters=30):
    """Q's coefficients (deg + 1 of them) on |r| <= R (the module's R)"""
    n = deg + 1
    # Chebyshev extrema as the first reference (n + 1 points for n coefficients + E)
    ref = [R * mp.cos(mp.pi * i / n) for i in range(n + 1)][::-1]
    c = None
    for _ in range(iters):
        A = mp.matrix(n + 1, n + 1)
        b = mp.matrix(n + 1, 1)
        for i, r in enumerate(ref):
            for j in range(n):
                A[i, j] = r ** (j + 2)
            A[i, n] = -((-1) ** i) * mp.exp(r)
            b[i] = mp.exp(r) - 1 - r
        sol = mp.lu_solve(A, b)
        c = [sol[j] for j in range(n)]
        # new reference: the extrema of the error between sign changes on a fine grid
        grid = [-R + 2 * R * k / 4000 for k in range(4001)]
        e = [rel_err(c, r) for r in grid]
        ext, seg = [], [0]
        for k in range(1, len(grid)):
            if mp.sign(e[k]) != mp.sign(e[seg[-1]]) and e[k] != 0:
                ext.append(max(seg, key=lambda i: abs(e[i])))
                seg = [k]
            else:
                seg.append(k)
        ext.append(max(seg, key=lambda i: abs(e[i])))
        if len(ext) != n + 1:
            break
        ref = [grid[i] for i in ext]
    return c


def check(cd, npts=20001):
    pts = [-R + 2 * R * k / (npts - 1) for k in range(npts)] + [mp.mpf(0), R, -R]
    return max(abs(rel_err(cd, r)) for r in pts)


def main(argv=None) -> int:
    global R
    import argparse
    ap = argparse.ArgumentParser(description="fit exp's reduced-range polynomial")
    ap.add_argument("--deg", type=int, default=DEG, help="Q's degree (the polynomial's - 2)")
    ap.add_argument("--table", type=int, default=1,
                    help="2^(j/N) table size N: |r| <= ln2/(2N) + 2^-20")
    ap.add_argument("--name", default="EXPW_C", help="prefix of the C macros")
    ap.add_argument("--bound", type=float, default=51.0,
                    help="exit 1 unless the error is below 2^-BOUND")
    args = ap.parse_args(argv)
    R = mp.log(2) / (2 * args.table) + mp.mpf(2) ** -20
    c = remez(deg=args.deg)
    cd = [mp.mpf(float(a)) for a in c]  # rounded to float64
    err = check(cd)
    print(f"degree {args.deg + 2}, |r| <= ln2/{2 * args.table} + 2^-20: max relative error "
          f"of the float64 coefficients {mp.nstr(err, 5)} = 2^{mp.nstr(mp.log(err, 2), 4)}")
    for j, a in enumerate(cd):
        print(f"#define {args.name}{j + 2} {float(a).hex()}  "
              f"/* ~1/{j + 2}! = {mp.nstr(1 / mp.factorial(j + 2), 17)} */")
    return 0 if err < mp.mpf(2) ** -args.bound else 1


if __name__ == "__main__":
    sys.exit(main())
