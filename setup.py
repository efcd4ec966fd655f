"""Build script: the package plus the optional compiled core.

The C extensions (``smx_cli.core._smx_native``, ``_smx_diag``, ``_smx_fast``) are optional: when it cannot be
compiled (no compiler, no Python headers) the install still succeeds with a
warning, and smx runs on its numpy kernels (``smx_cli.core.native.engine()``
then reports "numpy").
"""
import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:  # setuptools >= 59 vendors these under setuptools; fall back to distutils
    from setuptools.errors import CCompilerError, CompileError, ExecError, LinkError, PlatformError
    _BUILD_ERRORS = (CCompilerError, CompileError, ExecError, LinkError, PlatformError)
except ImportError:  # pragma: no cover - old setuptools
    from distutils.errors import (CCompilerError, DistutilsExecError, DistutilsPlatformError,
                                  CompileError, LinkError)
    _BUILD_ERRORS = (CCompilerError, DistutilsExecError, DistutilsPlatformError, CompileError,
                     LinkError)


def _flags():
    if sys.platform == "win32":
        return ["/O2", "/fp:precise"]
    # -O3: vectorise the row loops; -fno-trapping-math: lets gcc if-convert and
    # vectorise the branch-free exp (FP exception flags are never read; results
    # unchanged); -ffp-contract=off: the error-free transformations must not be
    # fused into FMAs implicitly. Never -ffast-math, never -march=native: CPU
    # dispatch happens at run time (target_clones in the C source).
    # -g0: no debug info (the clones of the unrolled kernels make it large and slow to emit)
    flags = ["-O3", "-g0", "-fno-trapping-math", "-ffp-contract=off"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        # the AVX-512 clone: full 512-bit vectors (gcc defaults to 256 for v4);
        # ignored by the AVX2 and baseline clones
        flags.append("-mprefer-vector-width=512")
    return flags


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing: the extension is an accelerator."""

    def run(self):
        try:
            super().run()
        except _BUILD_ERRORS + (OSError,) as exc:
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except _BUILD_ERRORS + (OSError,) as exc:
            self._warn(exc, ext.name)

    @staticmethod
    def _warn(exc, name="smx_cli.core._smx_native"):
        sys.stderr.write(
            f"WARNING: the optional C extension {name} could not be built "
            f"({exc}); smx will use its numpy kernels (slower, same results within the "
            "documented ulps).\n")


ext_modules = []
if os.environ.get("SMX_NO_NATIVE", "") not in ("1", "true", "yes"):
    ext_modules.append(Extension(
        "smx_cli.core._smx_native",
        sources=["smx_cli/core/_smx_native.c"],
        depends=["smx_cli/core/_smx_common.h", "smx_cli/core/_smx_dispatch.h", "smx_cli/core/_smx_base.h",
                 "smx_cli/core/_smx_softmax.h", "smx_cli/core/_smx_lowp.h",
                 "smx_cli/core/_smx_narrow64.h", "smx_cli/core/_smx_x4exp.h",
                 "smx_cli/core/_smx_f64x4.h",
                 "smx_cli/core/_smx_xent.h",
                 "smx_cli/core/_smx_vjp.h"],
        extra_compile_args=_flags(),
        libraries=[] if sys.platform == "win32" else ["m"],
        optional=True,
    ))
    # the diagnostics panel's counts in one pass (small; same flags)
    ext_modules.append(Extension(
        "smx_cli.core._smx_diag",
        sources=["smx_cli/core/_smx_diag.c"],
        depends=["smx_cli/core/_smx_common.h", "smx_cli/core/_smx_x4exp.h"],
        extra_compile_args=_flags(),
        libraries=[] if sys.platform == "win32" else ["m"],
        optional=True,
    ))

    # the compiled fast mode and online normaliser (small; same flags)
    ext_modules.append(Extension(
        "smx_cli.core._smx_fast",
        sources=["smx_cli/core/_smx_fast.c"],
        depends=["smx_cli/core/_smx_common.h", "smx_cli/core/_smx_dispatch.h", "smx_cli/core/_smx_base.h",
                 "smx_cli/core/_smx_lowp.h", "smx_cli/core/_smx_x4exp.h"],
        extra_compile_args=_flags(),
        libraries=[] if sys.platform == "win32" else ["m"],
        optional=True,
    ))

setup(
    # packages: [tool.setuptools.packages.find] in pyproject.toml (smx_cli, smx_cli.*)
    ext_modules=ext_modules,
    cmdclass={"build_ext": OptionalBuildExt},
)
