"""``flagcore gate --run ID``: each exit code (0 passed and approved, 4 HIFA failed, 5 not approved:
awaiting, needs work, rejected, superseded; 6 passed on int8 that disagrees with fp32; 1 bad input;
2 usage), its JSON, and the team config.

Runs are written straight into a small store from verdicts on synthetic returns (as in
test_gate_cli.py): no demo, no model."""

import json

import pytest
from test_gate_cli import STRONG, write_synthetic_run

from flagcore.cli import main
from flagcore.store.store import Store

FAILING = {k: STRONG[k] for k in ("opt4_ensemble", "baseline", "opt5_labels")}


def _gate(capsys, path, rid, *extra):
    rc = main(["gate", "--store", str(path), "--run", str(rid), *extra])
    return rc, capsys.readouterr()


def _sign(path, rid, *pairs, source="typed"):
    for who, verdict in pairs:
        Store(path).add_review(rid, who, verdict, identity_source=source)


def test_passed_and_approved_exits_0_awaiting_exits_5(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FLAGCORE_CONFIG", raising=False)
    path = tmp_path / "s.duckdb"
    rid = write_synthetic_run(path, STRONG)
    rc, out = _gate(capsys, path, rid)
    assert rc == 5
    assert out.out == (
        "gate: HIFA passed: opt3_threshold passes every criterion, but the run is awaiting review "
        "(0 of 2 approvals) (exit code 5)\n"
    )
    _sign(path, rid, ("ann", "approve"))
    assert _gate(capsys, path, rid)[0] == 5  # one of two
    _sign(path, rid, ("bob", "approve"), source="header")
    rc, out = _gate(capsys, path, rid, "--json")
    data = json.loads(out.out)
    assert rc == 0 == data["exit_code"] and data["passed"]
    assert data["hifa"]["passing_options"] == ["opt3_threshold"]
    assert data["review"]["status"] == "approved" and data["review"]["unverified_approvers"] == ["ann"]
    assert "and the run is approved (2 of 2 approvals: ann (unverified), bob)" in data["message"]


@pytest.mark.parametrize(
    "reviews, status",
    [
        ([("ann", "approve"), ("bob", "reject")], "rejected"),
        ([("ann", "approve"), ("bob", "needs-work")], "needs work"),
    ],
)
def test_not_approved_says_which(tmp_path, capsys, reviews, status):
    path = tmp_path / "s.duckdb"
    rid = write_synthetic_run(path, STRONG)
    _sign(path, rid, *reviews)
    rc, out = _gate(capsys, path, rid)
    assert rc == 5 and f"but the run is {status} (" in out.out


def test_a_superseded_run_exits_5_even_when_approved(tmp_path, capsys):
    from flagcore.analysis.gate import DEFAULT_CRITERIA
    from flagcore.store.runs import RunRows

    path = tmp_path / "s.duckdb"
    rid = write_synthetic_run(path, STRONG)
    _sign(path, rid, ("ann", "approve"), ("bob", "approve"))
    later = RunRows(
        "tiny", "k2", "0", "m", "d", None, {"criteria": {**DEFAULT_CRITERIA, "n": 1}}, {}, [], [], {}
    )
    newer = Store(path).write_run(later)  # the same checkpoint and data, other settings
    rc, out = _gate(capsys, path, rid, "--json")
    data = json.loads(out.out)
    assert rc == 5 and data["review"]["status"] == "superseded" and data["review"]["superseded_by"] == newer
    assert f"superseded by run {newer}" in data["message"]


def test_hifa_failed_exits_4_whatever_the_reviews(tmp_path, capsys):
    from flagcore.pipeline.gate import GATE_FAILED

    path = tmp_path / "s.duckdb"
    rid = write_synthetic_run(path, FAILING)
    _sign(path, rid, ("ann", "approve"), ("bob", "approve"))
    rc, out = _gate(capsys, path, rid)
    assert rc == GATE_FAILED == 4
    assert out.out.startswith(
        "gate: HIFA failed: no candidate option passes every criterion; the run is approved"
    )


def _int8(share: float | None) -> dict:
    """A run's settings and summary after an int8 evaluation whose baseline agreed with fp32 on
    ``share`` of 256 sampled bars (None: never compared)."""
    a = (
        None
        if share is None
        else {"bars_sampled": 256, "actions_equal_share": share, "max_abs_logit_diff": 1}
    )
    inf = {"baseline": {"precision": "int8", "agreement": a}, "retrained": {"precision": "fp32"}}
    return {"settings": {"precision": "int8"}, "summary": {"inference": inf}}


@pytest.mark.parametrize("share", [0.98, None])
def test_a_pass_on_int8_that_disagrees_with_fp32_exits_6_even_when_approved(tmp_path, capsys, share):
    from flagcore.pipeline.gate import GATE_LOW_AGREEMENT

    path = tmp_path / "s.duckdb"
    rid = write_synthetic_run(path, STRONG, **_int8(share))
    _sign(path, rid, ("ann", "approve"), ("bob", "approve"))
    rc, out = _gate(capsys, path, rid, "--json")
    data = json.loads(out.out)
    why = "98.0% of 256 sampled bars" if share else "never compared with fp32"
    assert rc == GATE_LOW_AGREEMENT == data["exit_code"] == 6 and not data["passed"]
    assert len(data["low_agreement"]) == 1 and why in data["low_agreement"][0]  # fp32 roles are not judged
    assert (
        "but on int8 inference (baseline: int8" in data["message"]
        and "evaluate again in fp32" in data["message"]
    )
    assert data["review"]["status"] == "approved"


def test_int8_that_agrees_with_fp32_is_gated_as_fp32_and_hifa_failing_stays_4(tmp_path, capsys):
    path = tmp_path / "s.duckdb"
    rid = write_synthetic_run(path, STRONG, **_int8(0.99))  # the bar itself: enough
    _sign(path, rid, ("ann", "approve"), ("bob", "approve"))
    assert _gate(capsys, path, rid)[0] == 0
    failing = write_synthetic_run(tmp_path / "f.duckdb", FAILING, **_int8(0.5))
    assert _gate(capsys, tmp_path / "f.duckdb", failing)[0] == 4  # HIFA's failure comes first


def test_the_team_config_sets_thresholds_and_policy(tmp_path, capsys, monkeypatch):
    path = tmp_path / "s.duckdb"
    rid = write_synthetic_run(path, FAILING)
    _sign(path, rid, ("ann", "approve"))
    cfg = tmp_path / "team.toml"
    cfg.write_text("[hifa]\nmin_trades = 10\n[review]\napprovals_required = 1\n")
    # fewer trades needed (opt4_ensemble now passes), one approval enough
    rc, out = _gate(capsys, path, rid, "--config", str(cfg))
    assert rc == 0, out
    assert "opt4_ensemble passes every criterion, and the run is approved (1 of 1 approvals" in out.out
    monkeypatch.setenv("FLAGCORE_CONFIG", str(cfg))  # the environment names the same file
    assert _gate(capsys, path, rid)[0] == 0
    cfg.write_text("[review]\napprovals_required = 3\n")
    assert _gate(capsys, path, rid)[0] == 4  # the run's own thresholds again: HIFA fails
    # validate --gate shares the HIFA part, the team config included
    cfg.write_text("[hifa]\nmin_trades = 10\n")
    assert main(["validate", "--store", str(path), "--run", str(rid), "--gate"]) == 0


def test_bad_input_and_usage_keep_the_clis_codes(tmp_path, capsys):
    path = tmp_path / "s.duckdb"
    rid = write_synthetic_run(path, STRONG)
    rc, out = _gate(capsys, path, rid + 5)
    assert rc == 1 and f"no run {rid + 5}" in out.err
    bad = tmp_path / "team.toml"
    bad.write_text("[review]\napprovals = 2\n")
    rc, out = _gate(capsys, path, rid, "--config", str(bad))
    assert rc == 1 and out.err.strip() == (
        f"flagcore: error: {bad}: unknown [review] key 'approvals'; known: approvals_required, "
        "author_may_approve, rejection_blocks, count_unverified"
    )
    with pytest.raises(SystemExit) as e:
        main(["gate"])
    assert e.value.code == 2


def test_the_help_documents_every_exit_code(capsys):
    from flagcore.pipeline.gate import GATE_CODES, GATE_NOT_APPROVED
    from flagcore.vocab import AGREEMENT_MIN

    with pytest.raises(SystemExit):
        main(["gate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert GATE_NOT_APPROVED == 5 and set(GATE_CODES) == {0, 4, 5, 6}
    assert f"under {AGREEMENT_MIN:.0%} of the sampled actions" in text
    for code in GATE_CODES:
        assert f" {code} HIFA " in text
    assert "3 internal error" in text and "2 usage error" in text


def test_the_report_judges_the_status_by_the_team_policy(tmp_path, capsys, monkeypatch):
    """`flagcore report --config` hands the team's [review] policy to the report (the synthetic run
    lacks the columns a whole report reads, so the renderer is stood in for)."""
    from flagcore.dashboard import report

    monkeypatch.delenv("FLAGCORE_CONFIG", raising=False)
    path = tmp_path / "s.duckdb"
    rid = write_synthetic_run(path, STRONG)
    _sign(path, rid, ("ann", "approve"))
    cfg = tmp_path / "team.toml"
    cfg.write_text("[review]\napprovals_required = 1\n")

    def status_only(store, run_id, fmt, *, policy=None):
        return store.run_status(run_id, policy).status + "\n"

    monkeypatch.setattr(report, "render_report", status_only)
    args = ["report", "--store", str(path), "--run", str(rid)]
    assert main(args) == 0
    assert capsys.readouterr().out == "awaiting review\n"  # the default policy asks for two
    assert main([*args, "--config", str(cfg)]) == 0
    assert capsys.readouterr().out == "approved\n"
