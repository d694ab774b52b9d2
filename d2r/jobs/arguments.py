"""Command-line arguments shared by the jobs."""

from __future__ import annotations

import argparse

SEED_PLACEHOLDER = "{seed}"


class UsageError(Exception):
    """A command line that cannot run as given: said in one line, exit status 2 (d2r.cli)."""


def add_run_arguments(parser: argparse.ArgumentParser, several_seeds: bool = False) -> None:
    """The arguments naming one run (experiment, method, seed), shared by train, evaluate and render;
    with `several_seeds` (train), --seed may be given more than once: a group of seeds trained together."""
    parser.add_argument("--params", default="params.yaml", help="the parameter file (default params.yaml)")
    parser.add_argument("--experiment", required=True, help="experiment name in params.yaml")
    parser.add_argument("--method", required=True, help="method name in params.yaml")
    if several_seeds:
        parser.add_argument("--seed", type=int, action="append", required=True,
                            help="run seed; given more than once, those seeds train together in lockstep in this "
                                 "one process (then --out and --record must contain {seed})")
    else:
        parser.add_argument("--seed", type=int, required=True, help="run seed")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: OMP_NUM_THREADS, which Snakemake sets to the "
                             "rule's threads; more threads than free cores make OpenMP spin, many times slower)")


def seeds_of(args) -> list[int]:
    """The run seeds the arguments name (one for every job but a group's train)."""
    return list(args.seed) if isinstance(args.seed, list) else [args.seed]


def per_seed(option: str, template: str, seeds: list[int]) -> list[str]:
    """`template` with {seed} filled in for each seed; with several seeds it must contain {seed}."""
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seed {' --seed '.join(map(str, seeds))}: each seed once")
    if len(seeds) > 1 and SEED_PLACEHOLDER not in str(template):
        raise UsageError(f"{option} {template}: with several seeds ({', '.join(map(str, seeds))}) it must contain "
                         f"{SEED_PLACEHOLDER}, filled in per seed (e.g. results/E/M/seed{SEED_PLACEHOLDER})")
    return [str(template).replace(SEED_PLACEHOLDER, str(seed)) for seed in seeds]
