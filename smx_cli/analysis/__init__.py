"""Analysis of computed results: diagnostics (overflow, underflow, NaN, sums) and the
stability comparison of every variant x precision against an exact reference."""
