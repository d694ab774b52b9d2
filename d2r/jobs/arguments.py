"""Command-line arguments shared by the jobs."""

from __future__ import annotations

import argparse


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments naming one run (experiment, method, seed), shared by train, evaluate and render."""
    parser.add_argument("--params", default="params.yaml", help="the parameter file (default params.yaml)")
    parser.add_argument("--experiment", required=True, help="experiment name in params.yaml")
    parser.add_argument("--method", required=True, help="method name in params.yaml")
    parser.add_argument("--seed", type=int, required=True, help="run seed")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: OMP_NUM_THREADS, which Snakemake sets to the "
                             "rule's threads; more threads than free cores make OpenMP spin, many times slower)")
