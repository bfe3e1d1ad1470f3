"""The `umup-repro` command: thin argument parsing; each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import sys


def _coord_check(args: argparse.Namespace) -> int:
    from umup_repro.analyses.coord_check import main as coord_check_main

    return coord_check_main(args)


def _bench(args: argparse.Namespace) -> int:
    from umup_repro.bench import main as bench_main

    return bench_main(args)


def _bench_data(args: argparse.Namespace) -> int:
    from umup_repro.bench_data import main as bench_data_main

    return bench_data_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="umup-repro", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("coord-check", help="Tensor Programs V coordinate check across width")
    p.add_argument("--parametrization", required=True, choices=["sp", "mup", "umup", "umup_fp8"])
    p.add_argument("--widths", default="64,128,256,512,1024", help="comma-separated widths")
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--steps", type=int, default=4, help="Adam steps after initialisation")
    p.add_argument("--lr", type=float, default=None, help="global LR (default: a per-parametrization value)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder for coord_check.csv and the figure")
    p.set_defaults(func=_coord_check)

    p = sub.add_parser("bench", help="forward+backward time of u-muP vs SP (prints numbers)")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--repeats", type=int, default=10)
    p.set_defaults(func=_bench)

    p = sub.add_parser("bench-data", help="corpus size, loader batches/s vs one training step (builds the token cache)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. data.corpus=wikitext103 (repeatable)")
    p.add_argument("--batches", type=int, default=2000, help="loader batches to time")
    p.add_argument("--steps", type=int, default=5, help="training steps to time")
    p.add_argument("--warmup", type=int, default=1, help="untimed training steps first")
    p.set_defaults(func=_bench_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
