#!/usr/bin/env python3
"""Write tests/fixtures/natten_*.npz: NATTEN's outputs for small random GNA problems, the
external check of jax_gna's semantics (tests/test_natten_fixtures.py).

Needs torch and natten (NATTEN 0.21 runs its flex backend on CPU: a CPU torch wheel is
enough), not jax_gna:

    pip install torch natten        # a separate environment is fine
    python scripts/make_natten_fixtures.py [--out tests/fixtures]

Each file holds float32 ``query``, ``key``, ``value`` ([1, *spatial, heads, head_dim]),
optional ``additional_keys``/``additional_values``, NATTEN's ``out`` and ``lse``, the
parameters (``kernel_size``, ``stride``, ``dilation``, ``is_causal``) and ``natten_version``.
"""

from __future__ import annotations

import argparse
import sys
import pathlib

import numpy as np

# name: (spatial, kernel_size, stride, dilation, is_causal, additional tokens)
CASES = {
    "1d_neighborhood": ((24,), (5,), (1,), (1,), (False,), 0),
    "1d_even_stride_dilation_causal": ((33,), (6,), (3,), (2,), (True,), 0),
    "1d_blocked": ((20,), (4,), (4,), (1,), (False,), 0),
    "1d_additional_tokens": ((16,), (5,), (2,), (1,), (False,), 3),
    "2d_stride_dilation": ((12, 10), (3, 4), (1, 2), (2, 1), (False, False), 0),
    "2d_causal_first_dim": ((9, 11), (5, 3), (2, 3), (1, 3), (True, False), 0),
    "2d_self_attention": ((8, 8), (8, 8), (1, 1), (1, 1), (False, False), 0),
    "2d_even_kernel_uneven_groups": ((11, 7), (4, 2), (3, 2), (2, 3), (False, True), 0),
    "3d_mixed": ((5, 4, 6), (3, 2, 3), (1, 2, 3), (1, 1, 2), (True, False, False), 0),
    "3d_dilation": ((4, 5, 5), (2, 2, 2), (2, 1, 2), (2, 2, 1), (False, False, False), 0),
}
HEADS, HEAD_DIM = 1, 8   # flex attention on CPU takes head dims of 8 and up


def main() -> int:
    try:
        import natten
        import torch
    except ModuleNotFoundError as e:
        print(f"make_natten_fixtures.py needs {e.name}: pip install natten torch "
              f"(or pip install '.[natten-fixtures]' in the jax_gna checkout)", file=sys.stderr)
        return 1

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path,
                        default=pathlib.Path(__file__).resolve().parents[1] / "tests" / "fixtures")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    functions = {1: natten.na1d, 2: natten.na2d, 3: natten.na3d}
    for seed, (name, (spatial, ks, ss, ds, cs, extra)) in enumerate(sorted(CASES.items())):
        rng = np.random.default_rng(seed)
        shape = (1, *spatial, HEADS, HEAD_DIM)
        arrays = {n: rng.standard_normal(shape).astype(np.float32)
                  for n in ("query", "key", "value")}
        kwargs = {}
        if extra:
            for n in ("additional_keys", "additional_values"):
                arrays[n] = rng.standard_normal((1, extra, HEADS, HEAD_DIM)).astype(np.float32)
                kwargs[n] = torch.from_numpy(arrays[n])
        out, lse = functions[len(spatial)](
            *(torch.from_numpy(arrays[n]) for n in ("query", "key", "value")),
            kernel_size=ks, stride=ss, dilation=ds, is_causal=cs, return_lse=True, **kwargs)
        np.savez_compressed(
            args.out / f"natten_{name}.npz", **arrays, out=out.numpy(),
            lse=lse.to(torch.float32).numpy(), kernel_size=np.array(ks),
            stride=np.array(ss), dilation=np.array(ds), is_causal=np.array(cs),
            natten_version=np.array(natten.__version__))
        print(f"{name}: out {tuple(out.shape)}, lse {tuple(lse.shape)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
