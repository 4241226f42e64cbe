"""``flagcore gate``: the exit code a pipeline stops on: HIFA passed and approved, or not (``GATE_EPILOG``).

The decision is :func:`flagcore.pipeline.gate.release_gate`: the HIFA part is ``validate --gate``'s,
judged with the team config's ``[hifa]`` thresholds; the review part is the run's status under its
``[review]`` policy (``--config PATH``, else ``$FLAGCORE_CONFIG``, else the defaults).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from flagcore.cli.options import Parents, add_command, config_argument, open_store
from flagcore.cli.output import emit

if TYPE_CHECKING:
    from flagcore.cli.options import Subparsers

# the codes of ``pipeline.gate.GATE_CODES``, written out so that building the parser does not import
# the pipeline (tests/test_gate_command.py holds them equal)
GATE_EPILOG = (
    "exit codes:\n"
    "  0  HIFA passed and the run is approved\n"
    "  4  HIFA failed: no candidate option passes every criterion (as validate --gate)\n"
    "  5  HIFA passed but the run is not approved: awaiting review, needs work, rejected or superseded\n"
    "  6  HIFA passed on int8 inference that agrees with fp32 on under 99% of the sampled actions:\n"
    "     evaluate again in fp32\n"
    "  1  bad input (no such run, a bad config file); 2 usage error; 3 internal error\n"
    "the team config file (--config, else $FLAGCORE_CONFIG): [hifa] thresholds, [review] policy\n"
    "(approvals_required, author_may_approve, rejection_blocks, count_unverified)."
)


def cmd_gate(args: argparse.Namespace) -> int:
    from flagcore.analysis.review_policy import hifa_section, load_review_policy
    from flagcore.pipeline.gate import release_gate

    policy = load_review_policy(args.config)  # a bad config fails before the store is read
    criteria = hifa_section(args.config)
    store = open_store(args)
    gate, _ = release_gate(store, args.run, criteria, policy)
    emit(gate.to_dict(), args.json, [f"gate: {gate.message} (exit code {gate.exit_code})"])
    return gate.exit_code


def _gate_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--run", type=int, required=True, metavar="ID")
    config_argument(s, "[hifa] thresholds and [review] policy")


def register(sub: Subparsers, parents: Parents) -> None:
    """Add ``gate``."""
    sp = add_command(
        sub,
        "gate",
        cmd_gate,
        "For pipelines: exit 0 when a run passes HIFA and its reviewers approved it; 4 HIFA failed; "
        "5 not approved (yet); 6 passed on int8 that disagrees with fp32.",
        _gate_arguments,
        parents.store,
        parents.json,
    )
    sp.epilog = GATE_EPILOG
    sp.formatter_class = argparse.RawDescriptionHelpFormatter
