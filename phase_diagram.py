"""Draw the phase diagram of the runs in a sweep database over two settings (no training): each cell coloured
by its majority run regime (comprehension, grokking, memorization, confusion; sweeps/regimes.py).

    python phase_diagram.py train_frac weight_decay --db results/sweep.sqlite --where lr=0.03
"""
import argparse
import sys

from config import parse_sets
from sweeps.regimes import REGIME_RULE, draw_phase_diagram


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Draw the phase diagram of runs in a sweep database (no training). "
                                                 "Run regimes: " + REGIME_RULE + ".")
    parser.add_argument("x", help="setting on the horizontal axis (a train.py Config field, e.g. train_frac)")
    parser.add_argument("y", help="setting on the vertical axis (e.g. weight_decay)")
    parser.add_argument("--db", default="results/sweep.sqlite", help="the sweep database")
    parser.add_argument("--where", nargs="+", default=[], metavar="NAME=V1,V2",
                        help="only runs with these settings (values parsed by the Config field's type)")
    parser.add_argument("--out", default="results/phase_diagram.png", help="where to write the PNG")
    args = parser.parse_args(argv)
    try:
        where = parse_sets(args.where, allow=("p", "seed", "arch"))
    except ValueError as err:
        parser.error(f"--where: {err}")
    try:
        data = draw_phase_diagram(args.db, args.x, args.y, where, args.out)
    except ValueError as err:  # SweepDBError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(data['cells'])} cells, {sum(c['n'] for c in data['cells'].values())} runs; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
