import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from dataset import is_prime, make_data, make_table


def brute_force(p, op):
    rows = []
    for a in range(p):
        for b in range(p):
            if op == "add":
                rows.append((a, b, (a + b) % p))
            elif op == "sub":
                rows.append((a, b, (a - b) % p))
            elif op == "mul":
                rows.append((a, b, (a * b) % p))
            elif b != 0:  # div: the c with c * b = a (mod p), found by search
                rows.append((a, b, next(c for c in range(p) if (c * b) % p == a)))
    return sorted(rows)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("p", [2, 7, 13])
def test_table_matches_brute_force(p, op):
    a, b, y = make_table(p, op)
    assert sorted(zip(a.tolist(), b.tolist(), y.tolist())) == brute_force(p, op)


def test_is_prime():
    assert [n for n in range(30) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]


def test_split_is_deterministic_disjoint_and_complete():
    d1, d2 = make_data(31, "add", 0.3, data_seed=5), make_data(31, "add", 0.3, data_seed=5)
    assert torch.equal(d1.train_idx, d2.train_idx)
    assert len(d1.train_idx) == round(0.3 * 31 * 31)
    both = torch.cat([d1.train_idx, d1.test_idx]).sort().values
    assert torch.equal(both, torch.arange(31 * 31))
    assert not torch.equal(make_data(31, "add", 0.3, data_seed=6).train_idx, d1.train_idx)


def test_split_does_not_depend_on_global_rng():
    torch.manual_seed(0)
    first = make_data(31, "add", 0.3, 598).train_idx
    torch.manual_seed(1)
    torch.rand(100)
    assert torch.equal(make_data(31, "add", 0.3, 598).train_idx, first)


def test_minibatches_cover_the_training_split_once():
    d = make_data(17, "add", 0.5, 0)
    batches = list(d.train_batches(10, torch.Generator().manual_seed(0)))
    a = torch.cat([x[0] for x in batches])
    b = torch.cat([x[1] for x in batches])
    ta, tb, _ = d.subset("train")
    assert sorted(zip(a.tolist(), b.tolist())) == sorted(zip(ta.tolist(), tb.tolist()))
    assert all(len(x[0]) <= 10 for x in batches)


@pytest.mark.parametrize("p, op, frac", [(1, "add", 0.3), (12, "div", 0.3), (13, "pow", 0.3),
                                         (13, "add", 0.0), (13, "add", 1.0)])
def test_bad_settings_raise(p, op, frac):
    with pytest.raises(ValueError):
        make_data(p, op, frac)


def test_cli_summary_and_bad_input():
    ok = subprocess.run([sys.executable, "dataset.py", "--p", "11", "--op", "div"], cwd=ROOT,
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "every label 0..10 occurs: True" in ok.stdout
    bad = subprocess.run([sys.executable, "dataset.py", "--p", "12", "--op", "div"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "prime" in bad.stderr
