#!/usr/bin/env python
"""Fuzz smx's readers for a while: random and mutated CSV/NPY/NPZ bytes.

    python tests/fuzz_long.py --seconds 600 [--seed N] [--save DIR]

Each input goes through ``smx_cli.io.read_array`` (with random reading
options), ``smx_cli.io.labels.read_labels`` and the CLI (``smx softmax FILE
--format csv`` in-process, with click's CliRunner). The contract: a result,
or a one-line SmxError / exit 1 or 2 -- never another exception, a traceback,
or a hang (each input gets ``--timeout`` seconds). Failing inputs are saved to
``--save`` (default: ``fuzz-failures/``) and counted; the figures are printed
at the end.

Not collected by pytest (the name does not start with ``test_``);
``tests/test_fuzz.py`` runs the same mutations through hypothesis for a
bounded time in CI.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import signal
import sys
import tempfile
import time
import traceback
import warnings
import zipfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "samples")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from smx_cli import io as smx_io  # noqa: E402
from smx_cli.errors import SmxError  # noqa: E402

#: tokens a mutation splices in: the corners of the text and binary formats
TOKENS = [b",", b";", b"\t", b" ", b"\n", b"\r\n", b"\r", b"#", b'"', b"nan", b"-inf", b"inf",
          b"Infinity", b"1e400", b"-1e400", b"1e-400", b"0x10", b"1_000", b"1,5", b"\xef\xbb\xbf",
          b"\x00", b"\xff", b"\x93NUMPY", b"PK\x03\x04", b"'descr': '|O'", b"'descr': '<c16'",
          b"'shape': ()", b"'shape': (999999999999, 99999999)", b"'fortran_order': True",
          b"'descr': '<f2'", b"'descr': '>f8'", b"'descr': '<U3'", b"'descr': '|b1'",
          b"(3, 4, 5)", b"-0", b"1.", b".5", b"+", b"-", b"e", b"E5",
          "\u2028".encode(), "ü".encode(), b"\x0b", b"\x0c", b"label", b"cat"]


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _npz(compressed: bool = False, **arrays) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def seed_inputs() -> list[bytes]:
    """Small valid inputs of every kind, from samples/ and made here."""
    seeds = []
    with open(os.path.join(SAMPLES, "seeds.csv"), "rb") as fh:
        seeds.append(fh.read())
    with open(os.path.join(SAMPLES, "mnist_lenet_logits.csv"), "rb") as fh:
        seeds.append(b"".join(fh.readlines()[:6]))
    with open(os.path.join(SAMPLES, "mnist_lenet_labels.csv"), "rb") as fh:
        seeds.append(b"".join(fh.readlines()[:6]))
    mnist = np.load(os.path.join(SAMPLES, "mnist_lenet_logits.npy"))[:4]
    seeds += [
        _npy(mnist), _npy(mnist.astype(np.float16)), _npy(np.array([1, 2, 3], dtype=np.int32)),
        _npy(np.array(2.5)), _npy(np.arange(24.0).reshape(2, 3, 4)),
        _npy(np.asfortranarray(mnist[:2, :3])),
        _npz(logits=mnist[:3]), _npz(True, logits=mnist[:2], classes=np.array(list("abcdefghij"))),
        b"cat,dog,bird\n1,2,3\n-inf,nan,inf\n", b"1;2;3\n4;5;6\n", b"1 2 3\n4 5 6\n",
        b"\xef\xbb\xbf1,2,3,\r\n4,5,6,\r\n", b"# comment\n1\n2\n",
    ]
    return seeds


def mutate(data: bytes, rng: random.Random, seeds: list[bytes]) -> bytes:
    """One to four random edits: flips, inserts, deletions, splices, truncation."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:  # flip a bit
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # a random byte
            b[pos:pos] = bytes([rng.randrange(256)])
        elif op == 2 and b:  # delete a range
            b[pos:pos + rng.randint(1, 16)] = b""
        elif op == 3:  # splice a token
            b[pos:pos] = rng.choice(TOKENS)
        elif op == 4 and b:  # replace a range with a token
            b[pos:pos + rng.randint(1, 8)] = rng.choice(TOKENS)
        elif op == 5:  # truncate
            del b[pos:]
        elif op == 6 and b:  # duplicate a range
            j = rng.randrange(len(b))
            b[pos:pos] = b[j:j + rng.randint(1, 64)]
        elif op == 7:  # splice part of another seed
            other = rng.choice(seeds)
            j = rng.randrange(len(other) + 1)
            b[pos:pos] = other[j:j + rng.randint(1, 64)]
        elif op == 8 and b:  # overwrite a byte with an interesting value
            b[rng.randrange(len(b))] = rng.choice([0, 0x7F, 0x80, 0xFF, ord("9"), ord("(")])
    return bytes(b)


def mutate_npz_member(data: bytes, rng: random.Random) -> bytes:
    """Rebuild an NPZ whose member (stored uncompressed) is a mutated NPY."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = {n: z.read(n) for n in z.namelist()}
    except Exception:  # noqa: BLE001 - not a zip: mutate the bytes instead
        return mutate(data, rng, [data])
    name = rng.choice(sorted(members))
    members[name] = mutate(members[name], rng, [members[name]])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, body in members.items():
            z.writestr(n, body)
    return buf.getvalue()


def random_input(rng: random.Random, seeds: list[bytes]) -> bytes:
    kind = rng.random()
    if kind < 0.08:  # plain random bytes
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
    if kind < 0.2:  # random text from the CSV alphabet
        alphabet = "0123456789.,;\t -+eEinfaINFA#\n\r\"x"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200))).encode()
    data = rng.choice(seeds)
    if data.startswith(smx_io.ZIP_MAGIC) and rng.random() < 0.5:
        return mutate_npz_member(data, rng)
    return mutate(data, rng, seeds)


# ----------------------------------------------------------------------------
# the targets


class Failure(Exception):
    """An input broke the contract."""


READ_OPTIONS = [{}, {"header": True}, {"header": False}, {"delimiter": ","},
                {"delimiter": " "}, {"delimiter": "\t"}, {"key": "logits"}, {"key": "nope"}]


def check_read(path: str, options: dict) -> None:
    """read_array: a Loaded with a real numeric array, or SmxError -- nothing else."""
    from smx_cli.io.labels import read_labels

    try:
        got = smx_io.read_array(path, **options)
    except SmxError as exc:
        if "\n" in exc.message or not exc.message:
            raise Failure(f"multi-line or empty SmxError: {exc.message!r}") from None
    except Exception as exc:  # noqa: BLE001
        raise Failure(f"read_array raised {type(exc).__name__}: {exc}") from exc
    else:
        v = got.values
        if not isinstance(v, np.ndarray) or not (v.dtype.kind in "fiu" or v.dtype == smx_io.BFLOAT16):
            raise Failure(f"read_array returned {type(v).__name__} {getattr(v, 'dtype', '')}")
    try:
        read_labels(path)
    except SmxError:
        pass
    except Exception as exc:  # noqa: BLE001
        raise Failure(f"read_labels raised {type(exc).__name__}: {exc}") from exc


def check_cli(path: str, args: tuple[str, ...] = ("--format", "csv")) -> int:
    """``smx softmax FILE ARGS`` in-process: exit 0, or 1/2 with one Error line."""
    from click.testing import CliRunner

    from smx_cli.cli import cli

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as main() does: numpy's warnings are not shown
        r = CliRunner().invoke(cli, ["softmax", path, *args])
    if not isinstance(r.exception, (SystemExit, type(None))):
        tb = "".join(traceback.format_exception(r.exception)) if r.exception else ""
        raise Failure(f"CLI raised {type(r.exception).__name__}: {r.exception}\n{tb}")
    if r.exit_code not in (0, 1, 2):
        raise Failure(f"CLI exit code {r.exit_code}")
    if r.exit_code == 1:
        lines = r.stderr.splitlines()
        if len(lines) != 1 or not lines[0].startswith("Error: "):
            raise Failure(f"CLI error is not one line: {r.stderr!r}")
    if "Traceback" in r.output:
        raise Failure("traceback in the output")
    return r.exit_code


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001
    raise _Timeout


def run(seconds: float, seed: int, save: str, timeout: float, cli_every: int) -> dict:
    rng = random.Random(seed)
    seeds = seed_inputs()
    stats = {"inputs": 0, "cli_runs": 0, "failures": 0, "ok": 0, "errors": 0,
             "distinct_failures": set()}
    signal.signal(signal.SIGALRM, _alarm)
    tmpdir = tempfile.mkdtemp(prefix="smx-fuzz-")
    path = os.path.join(tmpdir, "input")
    start = time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            data = random_input(rng, seeds)
            with open(path, "wb") as fh:
                fh.write(data)
            options = rng.choice(READ_OPTIONS)
            stats["inputs"] += 1
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                check_read(path, options)
                if stats["inputs"] % cli_every == 0:
                    stats["cli_runs"] += 1
                    code = check_cli(path)
                    stats["ok" if code == 0 else "errors"] += 1
            except (Failure, _Timeout) as exc:
                msg = "hang (> %gs)" % timeout if isinstance(exc, _Timeout) else str(exc)
                stats["failures"] += 1
                first = msg.splitlines()[0][:120]
                stats["distinct_failures"].add(first)
                os.makedirs(save, exist_ok=True)
                name = hashlib.sha1(data).hexdigest()[:12]
                with open(os.path.join(save, name + ".bin"), "wb") as fh:
                    fh.write(data)
                with open(os.path.join(save, name + ".txt"), "w") as fh:
                    fh.write(f"options: {options}\n{msg}\n")
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        os.rmdir(tmpdir)
    stats["seconds"] = round(time.monotonic() - start, 1)
    return stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", default="fuzz-failures")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per input")
    ap.add_argument("--cli-every", type=int, default=4,
                    help="run the CLI on every Nth input (it is slower than the readers)")
    args = ap.parse_args(argv)
    stats = run(args.seconds, args.seed, args.save, args.timeout, args.cli_every)
    distinct = sorted(stats.pop("distinct_failures"))
    print(f"fuzzed {stats['inputs']:,} inputs in {stats['seconds']} s "
          f"({stats['cli_runs']:,} also through the CLI: {stats['ok']:,} exit 0, "
          f"{stats['errors']:,} one-line errors); failures: {stats['failures']:,}"
          + (f" ({len(distinct)} distinct; inputs in {args.save}/)" if distinct else ""))
    for d in distinct:
        print("  -", d)
    return 1 if stats["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
