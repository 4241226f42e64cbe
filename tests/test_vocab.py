"""The shared words agree with what they name: presets, losses, roles, options and criteria."""

import pytest

from flagcore import vocab


def test_preset_names_are_the_presets():
    from flagcore.models.flag_trader import PRESETS

    assert tuple(PRESETS) == vocab.PRESET_NAMES


def test_every_loss_has_a_role_and_every_role_an_option():
    assert tuple(vocab.ROLE_BY_LOSS) == vocab.LOSSES
    assert set(vocab.MODEL_ROLES) <= set(vocab.OPTIONS)
    assert {vocab.THRESHOLD_OPTION, vocab.TAU_OPTION, *vocab.NOT_A_TRIAL} <= set(vocab.OPTIONS)


def test_class_words_line_up():
    assert [vocab.CLASS_NAMES[i] for i in (vocab.SELL, vocab.HOLD, vocab.BUY)] == ["SELL", "HOLD", "BUY"]
    assert [vocab.LABEL_CODES[c] for c in vocab.CLASS_NAMES] == [0, 1, 2]
    assert vocab.DIRECTION == (-1.0, 0.0, 1.0) and len(vocab.LOGIT_COLUMNS) == vocab.N_CLASSES


@pytest.mark.parametrize(
    "key, value, threshold, passed",
    [
        ("cpcv_mean_sharpe", 1.5, 1.5, True),
        ("cpcv_mean_sharpe", 1.49, 1.5, False),
        ("permutation_p", 0.05, 0.05, False),
        ("permutation_p", 0.049, 0.05, True),
    ],
)
def test_criteria_rules_compare_as_written(key, value, threshold, passed):
    assert vocab.CRITERION[key].passes(value, threshold) is passed


def test_collapse_sentence_says_status_reason_and_outlook():
    col = {
        "collapsed": True,
        "reason": "predicts HOLD on 99.9% of bars",
        "post_hoc_outlook": "a threshold can work",
    }
    assert vocab.collapse_sentence(col) == "COLLAPSED: predicts HOLD on 99.9% of bars. A threshold can work."
    assert vocab.collapse_label({"collapsed": False}) == "not collapsed"
    assert vocab.collapse_sentence({"collapsed": False, "reason": "x"}) == "Not collapsed: x."
