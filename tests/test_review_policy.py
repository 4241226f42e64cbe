"""The review policy and a run's review status, on synthetic review lists; the team config file."""

import doctest

import pytest

from flagcore.analysis import review_policy
from flagcore.analysis.review_policy import (
    ReviewPolicy,
    hifa_section,
    load_review_policy,
    read_team_config,
    run_status,
)
from flagcore.errors import FlagcoreError
from flagcore.vocab import RUN_STATUSES


def _r(reviewer, verdict, minute, source="oidc"):
    return {
        "reviewer": reviewer,
        "verdict": verdict,
        "identity_source": source,
        "created_at": f"2026-01-01T10:{minute:02d}:00+00:00",
    }


def test_two_approvals_are_needed_by_default():
    one = run_status([_r("ann", "approve", 1)], author="carl")
    assert (one.status, one.approvals, one.required, one.approvers) == ("awaiting review", 1, 2, ["ann"])
    two = run_status([_r("ann", "approve", 1), _r("Bob", "approve", 2)], author="carl")
    assert two.status == "approved" and two.approved and two.approvers == ["ann", "Bob"]
    assert two.reasons[0] == "2 of 2 approvals: ann, Bob"
    # the same reviewer twice (names compared case-insensitively) counts once
    same = run_status([_r("ann", "approve", 1), _r("ANN ", "approve", 2)], author=None)
    assert same.status == "awaiting review" and same.approvals == 1
    assert run_status([], None).status == "awaiting review"
    assert set(RUN_STATUSES) == {"awaiting review", "approved", "needs work", "rejected", "superseded"}


def test_the_authors_approval_counts_only_when_the_policy_allows():
    reviews = [_r("ann", "approve", 1), _r("Carl", "approve", 2)]
    rs = run_status(reviews, author="carl")
    assert rs.status == "awaiting review" and rs.approvers == ["ann"]
    assert "Carl's approval does not count: Carl is the run's author" in rs.reasons
    allowed = run_status(reviews, author="carl", policy=ReviewPolicy(author_may_approve=True))
    assert allowed.status == "approved" and allowed.approvals == 2
    # an unknown author (a run stored before authors were recorded) excludes no one
    assert run_status(reviews, author=None).status == "approved"


def test_a_reject_blocks_until_the_same_reviewer_approves():
    base = [_r("ann", "approve", 1), _r("bob", "approve", 2), _r("eve", "reject", 3)]
    rs = run_status(base, author=None)
    assert (rs.status, rs.approvals, rs.rejections) == ("rejected", 2, 1)
    assert "rejected by eve; it blocks approval until they approve" in rs.reasons
    # another reviewer's approval does not lift it; eve's own later approval does
    assert run_status([*base, _r("dan", "approve", 4)], None).status == "rejected"
    lifted = run_status([*base, _r("eve", "approve", 4)], None)
    assert lifted.status == "approved" and lifted.rejections == 0 and lifted.approvals == 3
    # the order is by time, not by list order: an approve older than the reject does not lift it
    assert run_status([_r("eve", "approve", 0), *base], None).status == "rejected"
    # a policy where a reject does not block: the approvals decide
    soft = ReviewPolicy(rejection_blocks=False)
    assert run_status(base, None, soft).status == "approved"
    assert run_status([_r("eve", "reject", 3)], None, soft).status == "rejected"


def test_needs_work_and_superseded():
    rs = run_status([_r("ann", "approve", 1), _r("bob", "needs-work", 2)], None)
    assert (rs.status, rs.needs_work) == ("needs work", 1)
    # bob approves later: his needs-work no longer stands
    rs = run_status([_r("ann", "approve", 1), _r("bob", "needs-work", 2), _r("bob", "approve", 3)], None)
    assert rs.status == "approved" and rs.needs_work == 0
    # superseded whatever the reviews say
    done = [_r("ann", "approve", 1), _r("bob", "approve", 2)]
    sup = run_status(done, None, superseded_by=7)
    assert (sup.status, sup.superseded_by, sup.approvals) == ("superseded", 7, 2)
    assert sup.reasons[0].startswith("superseded by run 7")
    assert sup.to_dict()["superseded_by"] == 7 and sup.to_dict()["status"] == "superseded"


def test_unverified_reviews_count_only_when_the_policy_says_so():
    reviews = [_r("ann", "approve", 1, "typed"), _r("bob", "approve", 2, "header")]
    rs = run_status(reviews, None)
    assert rs.status == "approved" and rs.unverified_approvers == ["ann"]
    assert rs.reasons[0] == "2 of 2 approvals: ann (unverified), bob"
    strict = run_status(reviews, None, ReviewPolicy(count_unverified=False))
    assert strict.status == "awaiting review" and strict.approvers == ["bob"]
    assert "ann's approve does not count: a typed name, unverified" in strict.reasons
    # a review stored before identities were recorded reads "typed"
    old = {k: v for k, v in _r("cid", "approve", 3).items() if k != "identity_source"}
    assert run_status([old], None, ReviewPolicy(approvals_required=1)).unverified_approvers == ["cid"]
    with pytest.raises(FlagcoreError, match="identity_source must be one of"):
        run_status([_r("x", "approve", 1, "badge")], None)


def test_the_team_config_file(tmp_path, monkeypatch):
    monkeypatch.delenv("FLAGCORE_CONFIG", raising=False)
    assert load_review_policy(None) == ReviewPolicy() and hifa_section(None) is None
    f = tmp_path / "team.toml"
    f.write_text(
        "[hifa]\nmin_trades = 10\n[review]\napprovals_required = 1\nauthor_may_approve = true\n"
        '[identity]\ntrusted_header = "X-Forwarded-Email"\n'
    )
    p = load_review_policy(f)
    assert (p.approvals_required, p.author_may_approve, p.rejection_blocks) == (1, True, True)
    assert hifa_section(f) == {"min_trades": 10}
    assert read_team_config(f)["identity"] == {"trusted_header": "X-Forwarded-Email"}
    monkeypatch.setenv("FLAGCORE_CONFIG", str(f))  # the environment names it when no path is given
    assert load_review_policy(None).approvals_required == 1


@pytest.mark.parametrize(
    "text, says",
    [
        ("[review]\napprovals_required = 0\n", "team.toml: [review] approvals_required must be a whole"),
        ("[review]\napprovals_required = 1.5\n", "approvals_required must be a whole number"),
        ('[review]\nauthor_may_approve = "yes"\n', "[review] author_may_approve must be true or false"),
        ("[review]\napprovals = 2\n", "team.toml: unknown [review] key 'approvals'"),
        ("[reviews]\napprovals_required = 2\n", "team.toml: unknown section or key 'reviews'"),
        ("review = 2\n", "team.toml: review must be a [review] section"),
        ("[review\n", "team.toml: not valid TOML"),
        ("[hifa]\nmin_trades = 'x'\n", "team.toml: min_trades must be a number"),
    ],
)
def test_a_bad_team_config_gives_one_line_naming_file_and_key(tmp_path, text, says):
    f = tmp_path / "team.toml"
    f.write_text(text)
    with pytest.raises(FlagcoreError) as e:
        load_review_policy(f)
        hifa_section(f)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_a_missing_team_config_is_an_error_not_the_defaults(tmp_path):
    with pytest.raises(FlagcoreError, match="nope.toml: no such team config file"):
        load_review_policy(tmp_path / "nope.toml")


def test_the_docstring_examples_hold():
    assert doctest.testmod(review_policy).failed == 0
