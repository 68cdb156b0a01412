"""Fourier analysis on Z_p: the basis, spectra, key frequencies, and the logit decompositions
of Nanda et al. (2023). Pure functions of tensors, so they can be tested on hand-built models.

Conventions: frequency k in 1..n//2 stands for w_k = 2*pi*k/n on Z_n; s(i, j) is the combination
the algorithm computes, i + j for 'add' and i - j for 'sub'.

Bases are data (Basis): the analysis runs over positions 0..n-1 of a cyclic group, each standing for
one token. For add and sub the group is Z_p itself (position = token). For mul and div with a prime p
it is the multiplicative group of Z_p, which is cyclic of order p - 1: with g the smallest primitive
root, token x = g^i sits at position i = log_g x, and a * b = g^(i + j) turns multiplication into
addition mod p - 1 (division into subtraction). Token 0 has no logarithm and no position.
"""
import math
from dataclasses import dataclass

import torch

CHUNK_BYTES = 2**27  # the most one piece of a chunked analysis step holds in one tensor (float32 logits of
# 33,000 pairs at p = 1009; the whole p*p grid up to p = 322)
KEY_RATIO = 10.0  # a key frequency holds >= KEY_RATIO x the median frequency's power
STRONG_FRACTION = 0.5  # key frequencies holding less than this share of the power: "weak structure"


@dataclass(frozen=True, eq=False)
class Basis:
    """Where the Fourier measures run: the group Z_n, position i standing for token tokens[i].
    op: the combination over positions ('add': i + j, 'sub': i - j)."""

    name: str  # for people: "Z_113" or "discrete log base 3 (Z_112)"
    n: int
    tokens: torch.Tensor  # (n,) int64: the token at each position
    op: str
    generator: int | None = None  # g of the discrete-log basis

    def table(self, per_token: torch.Tensor) -> torch.Tensor:
        """(p, ...) rows per token -> (n, ...) rows per position."""
        return per_token[self.tokens]

    def grid(self, over_pairs: torch.Tensor) -> torch.Tensor:
        """(p, p, ...) values over all token pairs (a, b) -> (n, n, ...) over position pairs (for Z_p, where
        position = token, the values themselves: no copy of a grid that can take gigabytes)."""
        return over_pairs if self.generator is None else over_pairs[self.tokens][:, self.tokens]

    def grid_rows(self, p: int) -> torch.Tensor:
        """(n*n,) the rows of a p*p grid (a major, b minor) that hold the position pairs, in order."""
        return (self.tokens[:, None] * p + self.tokens[None, :]).reshape(-1)


class NoBasis(ValueError):
    """The op has no known basis for this p (the message says why)."""


def primitive_root(p: int) -> int:
    """The smallest generator of the multiplicative group of Z_p (p prime)."""
    order = p - 1
    factors = {q for q in range(2, order + 1) if order % q == 0 and all(q % d for d in range(2, int(q**0.5) + 1))}
    return next(g for g in range(1, p) if all(pow(g, order // q, p) != 1 for q in factors))


def basis_for(p: int, op: str) -> Basis:
    """The basis in which op's algorithm is addition or subtraction; NoBasis where there is none."""
    if op in ("add", "sub"):
        return Basis(f"Z_{p}", p, torch.arange(p), op)
    if op not in ("mul", "div"):
        raise NoBasis(f"op {op!r} has no known basis")
    if p < 3 or any(p % d == 0 for d in range(2, int(p**0.5) + 1)):
        raise NoBasis(f"op {op} mod {p}: {p} is not an odd prime, so the non-zero residues are not a cyclic "
                      "group (zero divisors, and no generator in general) and there is no discrete-log basis")
    g = primitive_root(p)
    tokens = torch.tensor([pow(g, i, p) for i in range(p - 1)])
    return Basis(f"discrete log base {g} (Z_{p - 1})", p - 1, tokens, "add" if op == "mul" else "sub", g)


def fourier_basis(p: int) -> tuple[torch.Tensor, list[str]]:
    """Orthonormal real Fourier basis of Z_p, rows (p, p) in float64, and a label per row:
    'const', then 'cos k', 'sin k' for k = 1 .. (p-1)//2, then 'cos p/2' when p is even."""
    x = torch.arange(p, dtype=torch.float64)
    rows, labels = [torch.ones(p, dtype=torch.float64)], ["const"]
    for k in range(1, p // 2 + 1):
        rows.append(torch.cos(2 * math.pi * k * x / p))
        labels.append(f"cos {k}")
        if 2 * k != p:  # at the Nyquist frequency the sine is identically zero
            rows.append(torch.sin(2 * math.pi * k * x / p))
            labels.append(f"sin {k}")
    basis = torch.stack(rows)
    return basis / basis.norm(dim=1, keepdim=True), labels


def frequency_of_rows(p: int) -> torch.Tensor:
    """For each basis row, its frequency k (0 for the constant)."""
    _, labels = fourier_basis(p)
    return torch.tensor([0 if lab == "const" else int(lab.split()[1]) for lab in labels])


def frequencies(p: int) -> list[int]:
    return list(range(1, p // 2 + 1))


def by_column_groups(fn, x: torch.Tensor, group: int = 16) -> torch.Tensor:
    """fn applied to groups of x's last-dimension columns, the results joined along that dimension: float64
    work on a (1009, 1009, 256) activation grid copies 130 MB at a time, not 2 GB."""
    return torch.cat([fn(part) for part in x.split(group, dim=-1)], dim=-1)


def mean_float64(x: torch.Tensor, dim) -> torch.Tensor:
    """x.mean(dim) in float64 by column groups (torch's mean(dtype=float64) first copies all of x to float64)."""
    return by_column_groups(lambda part: part.double().mean(dim), x)


def power_per_frequency(table: torch.Tensor) -> torch.Tensor:
    """table: (p, n) values per token (e.g. W_E). Returns (p//2,) power of frequencies 1..p//2,
    summed over the n columns; the constant (mean over tokens) is left out."""
    p = table.shape[0]
    coeffs = fourier_basis(p)[0] @ table.double()  # (p, n)
    row_freq = frequency_of_rows(p)
    power = torch.zeros(p // 2 + 1, dtype=torch.float64).index_add_(0, row_freq, (coeffs**2).sum(1))
    return power[1:]


MIN_FREQUENCIES = 3  # with fewer frequencies (p <= 5) a median cannot single any out


def key_threshold(power: torch.Tensor) -> float:
    """The power a key frequency needs: KEY_RATIO x the median frequency's power (torch's median:
    the lower middle value for an even count), at least 1e-6 of the total, which keeps rounding
    noise out when the median is exactly zero."""
    return max(KEY_RATIO * float(power.median()), 1e-6 * float(power.sum()))


def key_frequencies(power: torch.Tensor) -> list[int]:
    """The frequencies (1-based) whose power reaches key_threshold(power).

    A random ToyMLP spreads power evenly (max / median 1.16-1.34 for p = 113), so this selects nothing;
    a trained or hand-built Fourier circuit puts almost all power in a few frequencies."""
    if len(power) < MIN_FREQUENCIES or power.sum() <= 0:
        return []
    threshold = key_threshold(power)
    return [k + 1 for k in range(len(power)) if power[k] >= threshold]


def power_fraction(power: torch.Tensor, keys: list[int]) -> float:
    total = power.sum()
    return float(power[[k - 1 for k in keys]].sum() / total) if keys and total > 0 else 0.0


def neuron_frequency_fractions(acts: torch.Tensor) -> torch.Tensor:
    """acts: (p, p, n) neuron activations over the grid (a, b). Returns (n, p//2): the share of each
    neuron's variance over the grid that lies in frequency k's terms: cos/sin(w_k a), cos/sin(w_k b)
    and their products (which carry cos/sin w_k(a + b) and w_k(a - b)). Computed for a group of
    neurons at a time, each group's float64 power taking at most CHUNK_BYTES."""
    p = acts.shape[0]
    group = max(1, CHUNK_BYTES // (8 * p * p))
    return torch.cat([_frequency_fractions(acts[..., i:i + group]) for i in range(0, acts.shape[-1], group)])


def _frequency_fractions(acts: torch.Tensor) -> torch.Tensor:
    p = acts.shape[0]
    basis = fourier_basis(p)[0].float()  # float32 is ample for shares of variance, and 2x faster
    centred = acts.float() - acts.float().mean(dim=(0, 1))
    over_a = torch.tensordot(basis, centred, dims=([1], [0]))  # (i, b, n): transform along a
    coeffs = torch.tensordot(basis, over_a, dims=([1], [1]))  # (j, i, n): then along b
    power = (coeffs.transpose(0, 1) ** 2).double()  # (i, j, n): (a-frequency row, b-frequency row)
    row_freq = frequency_of_rows(p)
    total = power.sum(dim=(0, 1)).clamp_min(1e-30)  # (n,)
    out = []
    for k in frequencies(p):
        in_k = (row_freq == k) | (row_freq == 0)
        block = power[in_k][:, in_k].sum(dim=(0, 1))  # the const x const entry is 0 after centring
        out.append(block / total)
    fractions = torch.stack(out, dim=1)  # (n, p//2)
    fractions[acts.double().reshape(p * p, -1).var(0) < 1e-12] = 0.0  # constant (dead) neurons
    return fractions


def combination(p: int, op: str) -> torch.Tensor:
    """s(a, b) over the grid, (p, p): a + b for add, a - b for sub (a basis's op is one of the two)."""
    if op not in ("add", "sub"):
        raise ValueError(f"a basis combines its positions by add or sub, not {op!r}")
    a = torch.arange(p).view(p, 1)
    b = torch.arange(p).view(1, p)
    return (a - b) % p if op == "sub" else (a + b) % p


def trig_directions(p: int, keys: list[int], op: str = "add") -> torch.Tensor:
    """Unit vectors over the (a, b) grid: cos(w_k s) and sin(w_k s) for each key k, (2*len(keys), p*p).
    They are orthonormal for distinct k in 1..p//2 (sin drops out at k = p/2)."""
    s = combination(p, op).reshape(-1).double()
    dirs = []
    for k in keys:
        dirs.append(torch.cos(2 * math.pi * k * s / p))
        if 2 * k != p:
            dirs.append(torch.sin(2 * math.pi * k * s / p))
    if not dirs:
        return torch.zeros(0, p * p, dtype=torch.float64)
    dirs = torch.stack(dirs)
    return dirs / dirs.norm(dim=1, keepdim=True)


def split_logits(logits: torch.Tensor, keys: list[int], op: str = "add") -> tuple[torch.Tensor, torch.Tensor]:
    """logits: (n*n, outputs) over the full grid of Z_n, rows in dataset.make_table order (a major,
    b minor). Returns (key_part, rest): key_part is, for each output c, the projection of logits[:, c]
    (a function of (a, b)) onto cos/sin(w_k s(a, b)) for the key k; rest = logits - key_part."""
    n = math.isqrt(logits.shape[0])
    dirs = trig_directions(n, keys, op)  # (2K, n*n)
    key_part = dirs.T @ (dirs @ logits.double())
    return key_part, logits.double() - key_part


def restricted_logits(logits: torch.Tensor, keys: list[int], op: str = "add") -> torch.Tensor:
    """Nanda et al.'s restricted logits: only the key-frequency directions, plus each output's mean
    over the grid (a per-output constant, like a bias)."""
    key_part, _ = split_logits(logits, keys, op)
    return key_part + logits.double().mean(dim=0, keepdim=True)


def excluded_logits(logits: torch.Tensor, keys: list[int], op: str = "add") -> torch.Tensor:
    """Nanda et al.'s excluded logits: the key-frequency directions removed."""
    return split_logits(logits, keys, op)[1]


def logit_fit(logits: torch.Tensor, keys: list[int], op: str = "add") -> tuple[float, dict[int, float]]:
    """Fit logits(a, b, c) ~ sum_k alpha_k cos(w_k (s(a, b) - c)) over the full grid.

    Each input's mean logit is removed first (softmax ignores it). The regressors are orthogonal,
    so alpha_k = <L, X_k> / <X_k, X_k>. Returns (share of variance explained, {k: alpha_k})."""
    s = combination(logits.shape[1], op).reshape(-1)
    return logit_fit_chunked(lambda: [(logits, s)], keys)


def logit_fit_chunked(chunks, keys: list[int]) -> tuple[float, dict[int, float]]:
    """logit_fit over the grid of Z_n in pieces: chunks() yields (logits (rows, n), s (rows,)), the rows
    of all pieces together making up the n*n pairs once; two passes (the alphas, then the residual)."""
    def centred_and_wave(logits, s):
        """The centred logits, and wave(k) -> X_k on these rows (made one at a time: each is as large as
        the logits, in float64)."""
        n = logits.shape[1]
        centred = logits.double() - logits.double().mean(dim=1, keepdim=True)  # (rows, n)
        c = torch.arange(n, dtype=torch.float64).view(1, -1)
        return centred, lambda k: torch.cos(2 * math.pi * k * (s.double().view(-1, 1) - c) / n)

    products, norms, total = dict.fromkeys(keys, 0.0), dict.fromkeys(keys, 0.0), 0.0
    for logits, s in chunks():
        centred, wave = centred_and_wave(logits, s)
        total += float((centred**2).sum())
        for k in keys:
            x = wave(k)
            products[k] += float((centred * x).sum())
            norms[k] += float((x * x).sum())
    alphas = {k: products[k] / norms[k] for k in keys}
    residual = 0.0
    for logits, s in chunks():
        centred, wave = centred_and_wave(logits, s)
        fit = torch.zeros_like(centred)
        for k in keys:
            fit += alphas[k] * wave(k)
        residual += float(((centred - fit) ** 2).sum())
    explained = 1 - residual / total if total > 0 else 0.0
    return explained, alphas


def grid_key_part(acts: torch.Tensor, keys: list[int]) -> torch.Tensor:
    """acts (p, p, n) over the grid (a, b): the part of each (centred) column made of frequency-k
    terms for k in keys (cos/sin(w_k a), cos/sin(w_k b) and their products), the same blocks
    neuron_frequency_fractions measures. Float64; acts - acts.mean((0, 1)) - this is the rest."""
    p = acts.shape[0]
    basis = fourier_basis(p)[0]
    row_freq = frequency_of_rows(p)
    centred = acts.double() - acts.double().mean(dim=(0, 1))
    coeffs = torch.einsum("ia,abn,jb->ijn", basis, centred, basis)  # (a-freq row, b-freq row, n)
    in_key = torch.isin(row_freq, torch.tensor([0, *keys], dtype=torch.long))
    mask = (in_key[:, None] & in_key[None, :]).double()  # blocks of key frequencies (const x const is 0)
    return torch.einsum("ia,ijn,jb->abn", basis, coeffs * mask[..., None], basis)


def remove_frequencies(table: torch.Tensor, freqs: list[int]) -> torch.Tensor:
    """table (p, n) with the cos/sin components of the given frequencies projected out."""
    p = table.shape[0]
    basis = fourier_basis(p)[0]
    rows = basis[torch.isin(frequency_of_rows(p), torch.tensor(freqs, dtype=torch.long))]
    return (table.double() - rows.T @ (rows @ table.double())).to(table.dtype)


def gini(values: torch.Tensor) -> float:
    """Gini coefficient of non-negative values: 0 when all are equal, (n-1)/n when one holds all."""
    v = values.double().flatten().sort().values
    n, total = len(v), v.sum()
    if n == 0 or total <= 0:
        return 0.0
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    return float((2 * (ranks * v).sum()) / (n * total) - (n + 1) / n)
