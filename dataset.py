"""Modular-arithmetic data: every pair (a, b) in Z_p x Z_p with label op(a, b) mod p.

Run `python dataset.py --p 113 --op add` for a summary of the table and its split.

The split comes from its own seeded generator (`data_seed`), so the model's init seed never
changes which pairs are in the training set.
"""
import argparse
import sys
from dataclasses import dataclass

import torch

OPS = ("add", "sub", "mul", "div")


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))


def check_args(p: int, op: str, train_frac: float) -> None:
    """Raise ValueError with one readable sentence for any setting we cannot build."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}: choose one of {', '.join(OPS)}")
    if p < 2:
        raise ValueError(f"p must be at least 2, got {p}")
    if op == "div" and not is_prime(p):
        raise ValueError(f"op 'div' needs a prime p (every b != 0 must be invertible), got {p}")
    if not 0 < train_frac < 1:
        raise ValueError(f"train fraction must lie strictly between 0 and 1, got {train_frac}")


def make_table(p: int, op: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All pairs (a, b) and their labels, as int64 tensors of shape (n,).

    n = p*p, except for 'div' where b = 0 is left out (n = p*(p-1)).
    """
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).unbind(1)
    if op == "div":
        keep = b != 0
        a, b = a[keep], b[keep]
        b_inv = torch.tensor([pow(int(x), p - 2, p) for x in b])  # Fermat: b^(p-2) = b^-1 mod p
        y = (a * b_inv) % p
    elif op == "add":
        y = (a + b) % p
    elif op == "sub":
        y = (a - b) % p
    elif op == "mul":
        y = (a * b) % p
    else:
        raise ValueError(f"unknown op {op!r}: choose one of {', '.join(OPS)}")
    return a, b, y


def split_indices(n: int, train_frac: float, data_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random split of range(n): round(train_frac * n) training indices, the rest for test."""
    gen = torch.Generator().manual_seed(data_seed)
    perm = torch.randperm(n, generator=gen)
    n_train = train_size(n, train_frac)
    return perm[:n_train].sort().values, perm[n_train:].sort().values


def table_size(p: int, op: str) -> int:
    """How many pairs make_table(p, op) returns, without building it."""
    return p * (p - 1) if op == "div" else p * p


def train_size(n: int, train_frac: float) -> int:
    """How many of n pairs split_indices puts in the training split."""
    return min(max(round(train_frac * n), 1), n - 1)


def corrupt_labels(y_train: torch.Tensor, p: int, frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Label noise: round(frac * n) of the n training labels, chosen by a generator seeded with
    `seed`, each replaced by a wrong label drawn uniformly from the other p - 1 classes (y + a shift
    in 1..p-1, mod p: never the true label). Returns (noisy labels, corrupted mask), both (n,).
    Its own generator, so the same seed gives the same noise whatever the torch global RNG holds."""
    if not 0 <= frac < 1:
        raise ValueError(f"label noise must lie in [0, 1), got {frac}")
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(y_train), generator=gen)[:round(frac * len(y_train))]
    noisy = y_train.clone()
    noisy[chosen] = (y_train[chosen] + torch.randint(1, p, (len(chosen),), generator=gen)) % p
    return noisy, noisy != y_train


@dataclass
class ModularData:
    """The whole table plus one split. Index a, b, y with train_idx or test_idx.

    y holds the true labels; y_fit the labels trained on: y, except on the training pairs that
    label noise corrupted (corrupted_train). Test labels are always clean."""

    p: int
    op: str
    a: torch.Tensor  # (n,) first operand
    b: torch.Tensor  # (n,) second operand
    y: torch.Tensor  # (n,) label op(a, b) mod p
    train_idx: torch.Tensor  # (n_train,) sorted indices into a, b, y
    test_idx: torch.Tensor  # (n_test,)
    y_fit: torch.Tensor | None = None  # (n,) the labels trained on; None: y (no label noise)

    def __post_init__(self):
        if self.y_fit is None:
            self.y_fit = self.y

    @property
    def corrupted_train(self) -> torch.Tensor:
        """(n_train,) bool: which training pairs carry a corrupted label."""
        return self.y_fit[self.train_idx] != self.y[self.train_idx]

    def subset(self, split: str, true_labels: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a, b, y) of 'train', 'test' or 'all', ready for a full-batch forward pass; y the labels
        trained on, or the true labels with true_labels=True (they differ only under label noise)."""
        y = self.y if true_labels else self.y_fit
        if split == "all":
            return self.a, self.b, y
        idx = {"train": self.train_idx, "test": self.test_idx}[split]
        return self.a[idx], self.b[idx], y[idx]

    def train_batches(self, batch_size: int, generator: torch.Generator):
        """Yield shuffled minibatches (a, b, y) of the training split; one pass = one epoch."""
        idx = self.train_idx[torch.randperm(len(self.train_idx), generator=generator)]
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            yield self.a[chunk], self.b[chunk], self.y_fit[chunk]

    def to(self, device) -> "ModularData":
        moved = {k: v.to(device) if torch.is_tensor(v) else v for k, v in vars(self).items()}
        return ModularData(**moved)


def make_data(p: int = 113, op: str = "add", train_frac: float = 0.3, data_seed: int = 598,
              label_noise: float = 0.0) -> ModularData:
    """Build the table for op mod p and split it, with a share label_noise of the training labels
    corrupted (seeded by data_seed too, so every init seed sees the same noise); raises ValueError
    on bad settings."""
    check_args(p, op, train_frac)
    a, b, y = make_table(p, op)
    train_idx, test_idx = split_indices(len(y), train_frac, data_seed)
    y_fit = None
    if label_noise:
        y_fit = y.clone()
        y_fit[train_idx] = corrupt_labels(y[train_idx], p, label_noise, data_seed)[0]
    return ModularData(p, op, a, b, y, train_idx, test_idx, y_fit)


SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Summarise the modular-arithmetic data set.")
    parser.add_argument("--p", type=int, default=113, help="modulus (a prime for op div)")
    parser.add_argument("--op", default="add", help=f"operation: {', '.join(OPS)}")
    parser.add_argument("--train-frac", type=float, default=0.3, help="share of pairs used for training, in (0, 1)")
    parser.add_argument("--data-seed", type=int, default=598, help="seed of the train/test split")
    args = parser.parse_args(argv)
    try:
        data = make_data(args.p, args.op, args.train_frac, args.data_seed)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n = len(data.y)
    print(f"p = {data.p}, op = {data.op}: {n} pairs, {len(data.train_idx)} train / {len(data.test_idx)} test "
          f"(train fraction {args.train_frac}, data seed {args.data_seed})")
    for i in data.train_idx[:5].tolist():
        print(f"  train example: {data.a[i]} {SYMBOLS[data.op]} {data.b[i]} = {data.y[i]} (mod {data.p})")
    counts = torch.bincount(data.y, minlength=data.p)
    print(f"every label 0..{data.p - 1} occurs: {bool((counts > 0).all())} (min {counts.min()}, max {counts.max()} times)")
    train_counts = torch.bincount(data.y[data.train_idx], minlength=data.p)
    print(f"labels seen in training: {int((train_counts > 0).sum())} of {data.p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
