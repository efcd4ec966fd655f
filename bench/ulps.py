"""Fast mode's measured accuracy: max error / (2 + |x - max| + log2 C) ulps, per format."""
import numpy as np, sys
import os; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from smx_cli.core.softmax import compute
from smx_cli.core.reference import exact_softmax
from smx_cli.core.precision import ulp_error, format_of
import ml_dtypes
rng=np.random.default_rng(0)
for dt in (np.float16, ml_dtypes.bfloat16, np.float32, np.float64):
    worst=0; worst_log=0
    for scale,(n,c) in ((1,(50,1000)),(3,(50,1000)),(10,(50,3000)),(30,(20,3000)),(3,(3000,10))):
        x=rng.normal(0,scale,(n,c)).astype(dt)
        p,lp=exact_smax=exact_softmax(x.astype(np.float64))
        fmt=format_of(np.dtype(dt))
        got=compute(x,fast=True).values
        normal=np.abs(p.astype(np.float64))>=fmt.smallest_normal
        err=ulp_error(got,p,fmt)
        dist=(x.astype(np.float64).max(1,keepdims=True)-x.astype(np.float64))
        bound=2+dist+np.log2(c)
        worst=max(worst,(err/bound)[normal].max())
        gl=compute(x,'log',fast=True).values
        errl=np.abs(gl.astype(np.float64)-lp.astype(np.float64))/np.maximum(np.abs(lp.astype(np.float64)),1)/fmt.eps
        worst_log=max(worst_log,(errl/bound).max())
    print(np.dtype(dt).name, 'max err/bound prob %.3f log %.3f'%(worst,worst_log))
