import pytest
import torch
from conftest import with_trained_lora
from peft import PeftModel
from peft.tuners.lora import LoraLayer

from flagcore.errors import FlagcoreError
from flagcore.models.flag_trader import (
    PRESETS,
    FlagTraderConfig,
    base_network,
    build_model,
    count_parameters,
    merged_copy,
    parameter_counts,
)


def test_full_preset_has_the_seed_parameter_counts():
    model = build_model(PRESETS["full"])
    assert count_parameters(model) == (87_955_971, 2_938_371)


def test_full_preset_trainable_breakdown_matches_reviewed_model():
    model = build_model(PRESETS["full"])
    groups = {
        "lora": 0,
        "norms": 0,
        "state_embedding": 0,
        "pos_embedding": 0,
        "output_norm": 0,
        "action_head": 0,
    }
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert ".base_layer." in name, name  # only the six Linear layers' bases are frozen
            continue
        key = (
            "lora"
            if "lora_" in name
            else "norms"
            if ".norm" in name
            else next(k for k in groups if k in name)
        )
        groups[key] += p.numel()
    assert groups == {
        "lora": 2_654_208,
        "norms": 36_864,
        "state_embedding": 46_848,
        "pos_embedding": 196_608,
        "output_norm": 1_536,
        "action_head": 2_307,
    }


def test_lora_is_peft_on_all_six_linears_with_scaling_one():
    model = build_model(PRESETS["demo"])
    assert isinstance(model, PeftModel)
    lora_layers = {
        n.removeprefix("base_model.model.transformer_blocks.")
        for n, m in model.named_modules()
        if isinstance(m, LoraLayer)
    }
    assert lora_layers == {
        f"{i}.{x}"
        for i in range(2)
        for x in (
            "attention.q_proj",
            "attention.k_proj",
            "attention.v_proj",
            "attention.out_proj",
            "ffn.0",
            "ffn.3",
        )
    }
    for m in model.modules():
        if isinstance(m, LoraLayer):
            assert m.scaling["default"] == 1.0
            assert torch.count_nonzero(m.lora_B["default"].weight) == 0  # B starts at zero


def test_forward_gives_logits_at_every_position():
    model = build_model(PRESETS["demo"]).eval()
    x = torch.randn(3, 17, 60)
    assert model(x).shape == (3, 17, 3)


def test_post_ln_block_order():
    """Post-LN: each block's output is a LayerNorm output (zero mean, unit variance per row)."""
    cfg = FlagTraderConfig(
        d_model=16, num_layers=1, num_heads=2, ff_dim=32, max_length=8, window=4, lora_rank=2, lora_alpha=2.0
    )
    net = base_network(build_model(cfg)).eval()
    out = {}
    net.transformer_blocks[0].register_forward_hook(lambda m, i, o: out.setdefault("y", o))
    net(torch.randn(2, 5, 60))
    y = out["y"]
    assert torch.allclose(y.mean(-1), torch.zeros(2, 5), atol=1e-5)
    assert torch.allclose(y.var(-1, unbiased=False), torch.ones(2, 5), atol=1e-3)


def test_merged_copy_matches_adapter_path_and_leaves_model_untouched():
    model = build_model(PRESETS["demo"], seed=1)
    with_trained_lora(model, 0.05)
    model.eval()
    x = torch.randn(4, 32, 60)
    merged = merged_copy(model)
    assert not isinstance(merged, PeftModel)
    assert torch.allclose(merged(x), model(x), atol=1e-5)
    assert isinstance(model, PeftModel) and any("lora_A" in n for n, _ in model.named_parameters())


def test_build_is_seeded():
    a = build_model(PRESETS["demo"], seed=3).state_dict()
    b = build_model(PRESETS["demo"], seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(d_model=30, num_heads=4), "not divisible"),
        (dict(window=300), "exceeds max_length"),
        (dict(num_layers=0), "num_layers"),
        (dict(dropout=1.5), "dropout"),
    ],
)
def test_config_validation_names_the_value(bad, match):
    with pytest.raises(FlagcoreError, match=match):
        FlagTraderConfig(**bad)


def test_forward_refuses_wrong_width_and_long_windows():
    model = build_model(PRESETS["demo"]).eval()
    with pytest.raises(FlagcoreError, match="expects 60 features"):
        model(torch.randn(1, 4, 49))
    with pytest.raises(FlagcoreError, match="exceeds the model's max_length 64"):
        model(torch.randn(1, 65, 60))


def test_last_position_path_equals_full_forward():
    model = build_model(PRESETS["demo"], seed=2)
    with_trained_lora(model, 0.1)
    model.eval()
    net = base_network(model)
    x = torch.randn(5, 32, 60)
    with torch.inference_mode():
        torch.testing.assert_close(net.last_logits(x), model(x)[:, -1], atol=1e-5, rtol=0)
        torch.testing.assert_close(
            net.hidden(x, last_only=True)[:, -1], net.hidden(x)[:, -1], atol=1e-5, rtol=0
        )


@pytest.mark.parametrize(
    "cfg",
    [
        *PRESETS.values(),
        FlagTraderConfig(
            d_model=24, num_layers=3, num_heads=3, ff_dim=40, max_length=16, window=8, lora_rank=2
        ),
        FlagTraderConfig(
            state_dim=7, action_dim=5, d_model=16, num_layers=1, num_heads=2, ff_dim=48, return_head=True
        ),
    ],
    ids=[*PRESETS, "odd", "return_head"],
)
def test_closed_form_parameter_counts_equal_the_built_models(cfg):
    # built on the meta device: the shapes without the memory or the initialisation (full: < 1 s)
    with torch.device("meta"):
        model = build_model(cfg, seed=None)
    assert parameter_counts(cfg) == count_parameters(model)


def test_the_preset_table_needs_no_torch():
    import subprocess
    import sys

    code = (
        "import sys; from flagcore.models.flag_trader_config import preset_table; rows = preset_table(); "
        "print(rows[0]['total_params'], rows[0]['trainable_params'], 'torch' in sys.modules, "
        "'peft' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["87955971", "2938371", "False", "False"]
