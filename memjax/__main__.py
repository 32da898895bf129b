"""Command line of memjax: ``python -m memjax demo`` and ``python -m memjax plan`` (also the ``memjax`` script).

``plan`` imports no JAX (:mod:`memjax._plan_report`); ``demo`` imports it with :mod:`memjax._demo`, only when run.

python -m memjax demo [--length 1000] [--memory 5%] [--kind msm] [--steps 150] [--batch 16] [--hidden 128]
python -m memjax plan --length 1000 --memory 5% --alpha 5 [--kind msm] [--width 72] [--height 20]
"""

from __future__ import annotations

import argparse
import sys


def _memory(text: str):
    """The demo's --memory: 'none' for the default, or a budget string memjax.scan accepts (a bare number is
    refused there, as it is ambiguous between a percentage and bytes)."""
    if text.lower() in ("none", "default"):
        return None
    return text


def build_parser() -> argparse.ArgumentParser:
    from memjax._plan import SCAN_KINDS
    from memjax._solver import KINDS

    parser = argparse.ArgumentParser(
        prog="python -m memjax", description="memjax: memory-efficient backpropagation through time for JAX."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{demo,plan}")

    demo = commands.add_parser(
        "demo",
        help="train a character-level LSTM with memjax.scan under a memory budget",
        description="Train a character-level LSTM (optax Adam) on the text shipped with memjax, over long "
        "sequences, with memjax.scan under a memory budget; then compare one gradient with "
        "jax.lax.scan's (temp memory, time, largest difference).",
    )
    demo.add_argument("--length", type=int, default=1000, help="sequence length, scan steps (default 1000)")
    demo.add_argument(
        "--memory",
        type=_memory,
        default="5%",
        help="memjax budget: '5%%' of what lax.scan stores, '16MiB', '5000B', or 'none' for the "
        "least memory with two forwards per step (default 5%%)",
    )
    demo.add_argument(
        "--kind", choices=SCAN_KINDS, default="msm", help="policy kind, or auto: the fastest predicted (default msm)"
    )
    demo.add_argument("--steps", type=int, default=150, help="training steps (default 150)")
    demo.add_argument("--batch", type=int, default=16, help="sequences per batch (default 16)")
    demo.add_argument("--hidden", type=int, default=128, help="LSTM units (default 128)")
    demo.add_argument("--embed", type=int, default=32, help="character embedding size (default 32)")
    demo.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default 1e-2)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--repeats", type=int, default=3, help="timed gradients per method in the comparison")
    demo.add_argument("--no-compare", action="store_true", help="skip the comparison with jax.lax.scan")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")

    plan = commands.add_parser(
        "plan",
        help="solve a policy and print its cost, peak memory and schedule",
        description="Solve the optimal policy for a length and a memory budget (no JAX involved) and print its "
        "cost in forward evaluations per step, its peak memory and a picture of its schedule.",
    )
    plan.add_argument("--length", type=int, required=True, help="number of steps t")
    plan.add_argument(
        "--memory",
        required=True,
        help="hidden-state units ('40') or a percentage of store-all, 1 + (t-1)*alpha units ('5%%')",
    )
    plan.add_argument(
        "--alpha", type=float, default=1.0, help="size of an internal state over a hidden state's (default 1)"
    )
    plan.add_argument("--kind", choices=KINDS, default="msm", help="policy kind (default msm)")
    plan.add_argument("--width", type=int, default=72, help="columns of the picture")
    plan.add_argument("--height", type=int, default=20, help="rows of the picture")
    plan.add_argument("--actions", type=int, default=0, help="also list the first N actions of the schedule")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "plan":
            from memjax._plan_report import plan_report  # no JAX: planning needs the solver alone

            print(
                plan_report(
                    args.length,
                    args.memory,
                    alpha=args.alpha,
                    kind=args.kind,
                    width=args.width,
                    height=args.height,
                    actions=args.actions,
                )
            )
        else:
            from memjax._demo import run_demo

            run_demo(
                length=args.length,
                memory=args.memory,
                kind=args.kind,
                steps=args.steps,
                batch=args.batch,
                hidden=args.hidden,
                embed=args.embed,
                learning_rate=args.lr,
                seed=args.seed,
                compare=not args.no_compare,
                repeats=args.repeats,
                progress=not args.no_progress,
            )
    except ValueError as error:
        if not _raised_by_memjax(error):  # a bug, not a bad argument: keep the traceback
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _raised_by_memjax(error: BaseException) -> bool:
    """Whether ``error`` was raised by memjax's own argument checks (the innermost frame is in memjax)."""
    import os

    traceback = error.__traceback__
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return os.path.dirname(os.path.abspath(traceback.tb_frame.f_code.co_filename)) == os.path.dirname(
        os.path.abspath(__file__)
    )


if __name__ == "__main__":
    sys.exit(main())
