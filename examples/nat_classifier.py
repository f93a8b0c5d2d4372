"""Train a small hierarchical Neighborhood Attention Transformer (NAT) image classifier.

NAT-style model in Flax NNX: an overlapping convolutional tokenizer, stages of
``NeighborhoodAttention2D`` + MLP blocks, strided-conv downsampling between stages, and a
pooled linear head; trained with optax on procedurally generated images whose class is a
texture (oriented stripes, checkerboards, rings, ...) under random phase, scale, colour and
noise. No dataset download: the data is generated here.

    python examples/nat_classifier.py            # CPU-sized (under a minute on 2 cores)
    python examples/nat_classifier.py --full     # larger images/model/run (default on GPU)
    python examples/nat_classifier.py --compare  # training-step time: GNA vs dense attention

``--compare`` trains nothing: it builds the model twice with the same parameters -- once with
``NeighborhoodAttention2D`` and once with ``nnx.MultiHeadAttention`` over the flattened grid
running ``jax.nn.dot_product_attention`` (cuDNN on a GPU) -- and prints the median time of
the jitted training step (forward, backward, AdamW update) of each. On a GPU it uses a
NAT-Tiny-shaped model on 224x224 images (56x56 tokens in the first stage, 7x7 windows).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

try:   # the `examples` extra
    import optax
    from tqdm import tqdm
except ModuleNotFoundError as err:
    raise SystemExit(f"nat_classifier.py needs {err.name}: pip install optax tqdm "
                     "(or pip install '.[examples]' in the jax_gna checkout)") from None

try:
    import jax_gna.nn as gnn
except ImportError:  # running from a source checkout without `pip install .`
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    import jax_gna.nn as gnn

# ----------------------------------------------------------------------------------------
# Data: textures that need spatial context (a single pixel says little about the class)
# ----------------------------------------------------------------------------------------

NUM_CLASSES = 8


def make_dataset(num_images: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, size, size, 3]`` (float32, roughly unit scale) and labels ``[N]``.

    Classes: stripes at 0/45/90/135 degrees, checkerboard, concentric rings, dots, and a
    smooth blob field. Period, phase, centre, colour and noise are drawn per image, so the
    model must recognise the pattern, not memorise pixels.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, num_images)
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    images = np.empty((num_images, size, size, 3), np.float32)
    for n, label in enumerate(labels):
        period = rng.uniform(0.15, 0.3) * size
        phase = rng.uniform(0, 2 * np.pi)
        cy, cx = rng.uniform(0.2, 0.8, 2) * size
        w = 2 * np.pi / period
        if label < 4:  # stripes at one of four orientations
            angle = label * np.pi / 4 + rng.normal(0, 0.08)
            pattern = np.sin(w * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
        elif label == 4:  # checkerboard
            pattern = np.sin(w * xx + phase) * np.sin(w * yy + phase)
        elif label == 5:  # rings around a random centre
            pattern = np.sin(w * np.hypot(yy - cy, xx - cx) + phase)
        elif label == 6:  # sparse dots on a lattice
            pattern = (np.cos(w * xx + phase) * np.cos(w * yy + phase) > 0.7) * 2.0 - 0.6
        else:  # smooth blobs: a few low-frequency waves in random directions
            angles = rng.uniform(0, np.pi, 3)
            pattern = sum(np.sin(0.5 * w * (np.cos(a) * xx + np.sin(a) * yy) + p)
                          for a, p in zip(angles, rng.uniform(0, 2 * np.pi, 3))) / 1.5
        colour = rng.uniform(0.3, 1.0, 3) * rng.choice([-1, 1], 3)
        image = pattern[..., None] * colour + rng.normal(0, 1.0, (size, size, 3))
        images[n] = image
    return images, labels.astype(np.int32)


# ----------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------


# Flax >= 0.12 wants lists of submodules wrapped in nnx.List; older releases take a list.
_List = getattr(nnx, "List", list)


class Mlp(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, dtype, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(dim, hidden, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.fc2(nnx.gelu(self.fc1(x)))


def dense_attention_fn(implementation):
    """An attention_fn for nnx.MultiHeadAttention that calls jax.nn.dot_product_attention
    (MultiHeadAttention passes mask/dropout/... keywords; this model uses none of them)."""
    def attention_fn(query, key, value, **unused):
        return jax.nn.dot_product_attention(query, key, value, implementation=implementation)
    return attention_fn


class NATBlock(nnx.Module):
    """Pre-norm transformer block whose token mixer is 2-D neighborhood attention, or, with
    ``attention="dense"``, attention over the whole grid (same parameter tree: the GNA layer
    builds its projections like ``nnx.MultiHeadAttention``)."""

    def __init__(self, dim: int, heads: int, kernel_size: int, *, dtype, rngs: nnx.Rngs,
                 attention: str = "gna", dense_implementation: str | None = None):
        self.attention = attention
        self.norm1 = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
        if attention == "gna":
            self.attn = gnn.NeighborhoodAttention2D(heads, dim, kernel_size=kernel_size,
                                                    dtype=dtype, rngs=rngs)
        else:
            self.attn = nnx.MultiHeadAttention(
                heads, dim, decode=False, dtype=dtype, rngs=rngs,
                attention_fn=dense_attention_fn(dense_implementation))
        self.norm2 = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
        self.mlp = Mlp(dim, 3 * dim, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        h = self.norm1(x)
        if self.attention == "gna":
            h = self.attn(h)
        else:  # dense: every token of the flattened grid
            h = self.attn(h.reshape(h.shape[0], -1, h.shape[-1])).reshape(x.shape)
        x = x + h
        return x + self.mlp(self.norm2(x))


class Downsample(nnx.Module):
    """NAT's downsampler: 3x3 stride-2 conv (halves H and W, changes width) + LayerNorm."""

    def __init__(self, dim_in: int, dim_out: int, *, dtype, rngs: nnx.Rngs):
        self.conv = nnx.Conv(dim_in, dim_out, (3, 3), strides=(2, 2), padding=1, dtype=dtype,
                             rngs=rngs)
        self.norm = nnx.LayerNorm(dim_out, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.norm(self.conv(x))


class NAT(nnx.Module):
    """Tokenizer (two stride-2 3x3 convs: overlapping patches, /4) -> stages -> pooled head."""

    def __init__(self, dims, depths, heads, kernel_sizes, num_classes, *, dtype=None,
                 rngs: nnx.Rngs, attention: str = "gna", dense_implementation=None):
        d0 = dims[0]
        self.stem1 = nnx.Conv(3, d0 // 2, (3, 3), strides=(2, 2), padding=1, dtype=dtype,
                              rngs=rngs)
        self.stem2 = nnx.Conv(d0 // 2, d0, (3, 3), strides=(2, 2), padding=1, dtype=dtype,
                              rngs=rngs)
        self.stem_norm = nnx.LayerNorm(d0, dtype=dtype, rngs=rngs)
        self.stages = _List([
            _List([NATBlock(dim, h, k, dtype=dtype, rngs=rngs, attention=attention,
                            dense_implementation=dense_implementation)
                   for _ in range(depth)])
            for dim, depth, h, k in zip(dims, depths, heads, kernel_sizes)])
        self.downsamples = _List([Downsample(a, b, dtype=dtype, rngs=rngs)
                                  for a, b in zip(dims[:-1], dims[1:])])
        self.norm = nnx.LayerNorm(dims[-1], dtype=dtype, rngs=rngs)
        self.head = nnx.Linear(dims[-1], num_classes, rngs=rngs)

    def __call__(self, images):
        x = self.stem_norm(self.stem2(nnx.gelu(self.stem1(images))))
        for i, blocks in enumerate(self.stages):
            if i > 0:
                x = self.downsamples[i - 1](x)
            for block in blocks:
                x = block(x)
        pooled = self.norm(x).mean(axis=(1, 2))
        return self.head(pooled.astype(jnp.float32))


# ----------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------

SMALL = dict(image=32, dims=(32, 64), depths=(2, 2), heads=(2, 4), kernel_sizes=(5, 3),
             train=2048, batch=64, steps=300, lr=2e-3, dtype=None)
FULL = dict(image=64, dims=(64, 128, 256), depths=(2, 2, 4), heads=(2, 4, 8),
            kernel_sizes=(7, 5, 3), train=16384, batch=128, steps=1500, lr=1e-3,
            dtype=jnp.bfloat16)
# --compare: NAT-Tiny's shape (224x224 images: 56, 28, 14, 7 tokens per side; 7x7 windows;
# head dim 32) on a GPU; a scaled-down twin on a CPU.
COMPARE = dict(image=224, dims=(64, 128, 256, 512), depths=(3, 4, 6, 5), heads=(2, 4, 8, 16),
               kernel_sizes=(7, 7, 7, 7), batch=64, lr=1e-3, dtype=jnp.bfloat16)
COMPARE_CPU = dict(image=64, dims=(32, 64), depths=(1, 1), heads=(1, 2),
                   kernel_sizes=(7, 7), batch=4, lr=1e-3, dtype=None)


def make_model(cfg, seed: int, **attention) -> NAT:
    return NAT(cfg["dims"], cfg["depths"], cfg["heads"], cfg["kernel_sizes"], NUM_CLASSES,
               dtype=cfg["dtype"], rngs=nnx.Rngs(seed), **attention)


def make_train_step(model: NAT, tx):
    """(params, opt_state, jitted step, logits_fn) of a functional training loop: the module
    is split once into a static graph and the parameter pytree, and a pure step is jitted.
    (Avoids nnx.Optimizer, whose API changed across Flax releases.)"""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def logits_fn(params, x):
        return nnx.merge(graphdef, params, rest)(x)

    @jax.jit
    def train_step(params, opt_state, x, y):
        def loss_fn(params):
            logits = logits_fn(params, x)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, (logits.argmax(-1) == y).mean()
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, acc

    return params, tx.init(params), train_step, logits_fn


def compare(args, on_gpu: bool) -> None:
    """Median training-step time of the GNA model and of the dense-attention model."""
    cfg = dict(COMPARE if on_gpu else COMPARE_CPU)
    if args.batch:
        cfg["batch"] = args.batch
    images, labels = make_dataset(4 * cfg["batch"], cfg["image"], args.seed)
    batches = [(jnp.asarray(images[i::4]), jnp.asarray(labels[i::4])) for i in range(4)]
    tx = optax.adamw(cfg["lr"], weight_decay=0.05)
    implementation = "cudnn" if on_gpu else None
    grids = [cfg["image"] // 4 >> i for i in range(len(cfg["dims"]))]
    print(f"training step of a NAT classifier: {cfg['image']}x{cfg['image']} images, batch "
          f"{cfg['batch']}, stages {', '.join(f'{g}x{g}' for g in grids)} tokens, depths "
          f"{cfg['depths']}, heads {cfg['heads']} x 32, windows {cfg['kernel_sizes']}, "
          f"{jnp.dtype(cfg['dtype'] or jnp.float32).name}; median of {args.iters} steps")
    rows, initial = [], []
    for name, attention in (("GNA (jax_gna)", dict(attention="gna")),
                            (f"dense ({implementation or 'XLA'})",
                             dict(attention="dense", dense_implementation=implementation))):
        params, opt_state, step, _ = make_train_step(make_model(cfg, args.seed, **attention),
                                                     tx)
        initial.append(jax.tree.leaves(params))
        times = []
        for i in range(args.warmup + args.iters):  # the first step compiles
            x, y = batches[i % len(batches)]      # rotating inputs
            t0 = time.perf_counter()
            params, opt_state, loss, _ = step(params, opt_state, x, y)
            jax.block_until_ready(loss)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        rows.append((name, 1e3 * statistics.median(times), float(loss)))
    same = all(bool(jnp.array_equal(a, b)) for a, b in zip(*initial))
    print(f"same initial parameters in both models: {same}")
    print(f"\n{'attention':22s} {'step ms':>9s} {'speedup':>8s} {'last loss':>10s}")
    for name, ms, loss in rows:
        print(f"{name:22s} {ms:9.2f} {rows[1][1] / ms:7.2f}x {loss:10.4f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="full size (default when a GPU is present)")
    parser.add_argument("--steps", type=int, help="training steps (default: by size)")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare", action="store_true",
                        help="time one training step with GNA and with dense attention "
                             "(no training)")
    parser.add_argument("--batch", type=int, help="--compare: batch size (default 64 on a "
                                                  "GPU)")
    parser.add_argument("--warmup", type=int, default=3, help="--compare: untimed steps")
    parser.add_argument("--iters", type=int, default=10, help="--compare: timed steps")
    args = parser.parse_args()
    on_gpu = jax.default_backend() == "gpu"
    if args.compare:
        compare(args, on_gpu)
        return
    size = "full" if args.full or on_gpu else "small"
    cfg = dict(FULL if size == "full" else SMALL)
    if args.steps:
        cfg["steps"] = args.steps
    print(f"JAX backend: {jax.default_backend()}, size: {size}, config: "
          f"{ {k: v for k, v in cfg.items() if k != 'dtype'} }")

    t0 = time.perf_counter()
    images, labels = make_dataset(cfg["train"], cfg["image"], args.seed)
    test_images, test_labels = make_dataset(512, cfg["image"], args.seed + 1)
    print(f"generated {len(images)} train / {len(test_images)} held-out images "
          f"in {time.perf_counter() - t0:.1f} s")

    model = make_model(cfg, args.seed)
    schedule = optax.warmup_cosine_decay_schedule(0.0, cfg["lr"], cfg["steps"] // 10,
                                                  cfg["steps"])
    params, opt_state, train_step, logits_fn = make_train_step(
        model, optax.adamw(schedule, weight_decay=0.05))
    num_params = sum(p.size for p in jax.tree.leaves(params))
    print(f"model: {num_params / 1e6:.2f} M parameters")

    @jax.jit
    def predict(params, x):
        return logits_fn(params, x).argmax(-1)

    def accuracy(params, xs, ys):
        hits = 0
        for i in range(0, len(xs), 256):
            hits += int((predict(params, jnp.asarray(xs[i:i + 256])) == ys[i:i + 256]).sum())
        return hits / len(xs)

    rng = np.random.default_rng(args.seed)
    losses, accs, curve = [], [], []
    t0 = time.perf_counter()
    bar = tqdm(range(1, cfg["steps"] + 1), desc="train", unit="step")
    for step in bar:
        idx = rng.integers(0, len(images), cfg["batch"])
        params, opt_state, loss, acc = train_step(params, opt_state, jnp.asarray(images[idx]),
                                                  jnp.asarray(labels[idx]))
        losses.append(float(loss))
        accs.append(float(acc))
        if step == 1:
            compile_s = time.perf_counter() - t0
        if step % args.log_every == 0 or step == cfg["steps"]:
            window = slice(-args.log_every, None)
            mean_loss, mean_acc = np.mean(losses[window]), np.mean(accs[window])
            curve.append((step, mean_loss))
            bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{mean_acc:.2f}")
            tqdm.write(f"step {step:5d}  loss {mean_loss:.4f}  batch acc {mean_acc:.3f}")
    elapsed = time.perf_counter() - t0
    bar.close()

    print(f"\ntrained {cfg['steps']} steps in {elapsed:.1f} s "
          f"(first step incl. compile {compile_s:.1f} s)")
    print("loss curve: " + ", ".join(f"{s}:{l:.3f}" for s, l in curve))
    print(f"final train accuracy:    {accuracy(params, images, labels):.3f}")
    print(f"held-out accuracy:       {accuracy(params, test_images, test_labels):.3f}")
    print(f"chance:                  {1 / NUM_CLASSES:.3f}")


if __name__ == "__main__":
    main()
