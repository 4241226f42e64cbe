import json

import pytest
import torch
from conftest import SMALL, reference_forward, reviewed_state_dict, with_trained_lora

from flagcore import load_checkpoint
from flagcore.cli.command import main
from flagcore.errors import FlagcoreError
from flagcore.models.checkpoint import import_checkpoint, read_checkpoint, save_checkpoint
from flagcore.models.flag_trader import PRESETS, build_model


def _reviewed_file(tmp_path, layout, cfg=SMALL, seed=0, config=None):
    sd = reviewed_state_dict(cfg, seed)
    obj = {
        "model": {
            "model": sd,
            "config": config or {"state_dim": 60, "action_dim": 3, "max_length": cfg.max_length},
        },
        "model_state_dict": {"model_state_dict": sd, "epoch": 3},
        "bare": sd,
    }[layout]
    path = tmp_path / f"reviewed_{layout}.pt"
    torch.save(obj, path)
    return path, sd


@pytest.mark.parametrize("layout", ["model", "model_state_dict", "bare"])
def test_reviewed_checkpoint_reproduces_reference_logits(tmp_path, layout):
    path, sd = _reviewed_file(tmp_path, layout)
    model = load_checkpoint(path, num_heads=SMALL.num_heads)
    assert not model.training
    x = torch.randn(3, 11, 60, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        got = model(x)
    want = reference_forward(sd, x, num_heads=SMALL.num_heads, lora_alpha=16.0)
    assert got.shape == (3, 11, 3)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    info = model.checkpoint_info
    assert info.source_format == f"reviewed:{layout}"
    assert info.config.lora_rank == 8 and info.config.lora_scaling == 2.0
    assert (info.config.d_model, info.config.num_layers, info.config.ff_dim) == (32, 2, 64)


def test_wrong_head_count_changes_logits(tmp_path):
    """num_heads is not in the tensors; the reference only matches with the right one."""
    path, sd = _reviewed_file(tmp_path, "bare")
    x = torch.randn(2, 6, 60)
    wrong = load_checkpoint(path, num_heads=2)
    with torch.inference_mode():
        assert not torch.allclose(wrong(x), reference_forward(sd, x, num_heads=4), atol=1e-4)


def test_config_in_file_supplies_num_heads(tmp_path):
    path, sd = _reviewed_file(
        tmp_path, "model", config={"state_dim": 60, "action_dim": 3, "max_length": 16, "num_heads": 4}
    )
    model = load_checkpoint(path)
    x = torch.randn(2, 6, 60)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), reference_forward(sd, x, 4), atol=1e-5, rtol=0)


def test_full_size_reviewed_checkpoint_counts(tmp_path, capsys):
    sd = reviewed_state_dict(PRESETS["full"])
    path = tmp_path / "flag_trader_full.pt"
    torch.save({"model": sd, "config": {"state_dim": 60, "action_dim": 3, "max_length": 256}}, path)
    del sd
    assert main(["info", "--checkpoint", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["total_params"], info["trainable_params"]) == (87_955_971, 2_938_371)
    assert info["config"]["d_model"] == 768 and info["config"]["num_layers"] == 12


def test_own_format_round_trip_is_exact(tmp_path):
    model = build_model(PRESETS["demo"], seed=5)
    with_trained_lora(model, 1.0)
    path = save_checkpoint(
        model,
        tmp_path / "ckpt.safetensors",
        feature_names=[f"f{i}" for i in range(49)],
        padded_inputs=list(range(49, 60)),
        provenance={"loss": "ce", "seed": 5},
    )
    loaded, info = read_checkpoint(path)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert info.meta.feature_names[0] == "f0" and info.meta.padded_inputs == list(range(49, 60))
    assert info.meta.provenance == {"loss": "ce", "seed": 5}
    assert info.config == PRESETS["demo"]
    x = torch.randn(2, 9, 60)
    model.eval(), loaded.eval()
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))


def test_folder_checkpoint_and_import_command(tmp_path, capsys):
    path, sd = _reviewed_file(tmp_path, "model")
    out = tmp_path / "imported"
    assert main(["import", str(path), "--out", str(out), "--num-heads", "4", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["source_format"] == "flagcore"
    assert info["provenance"]["source_format"] == "reviewed:model"
    model = load_checkpoint(out)  # a folder holding model.safetensors
    x = torch.randn(2, 7, 60)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), reference_forward(sd, x, 4), atol=1e-5, rtol=0)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch EVIL_RAN",))


def test_pickle_needing_code_execution_is_refused_not_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "payload": _Evil()}, path)
    assert main(["info", "--checkpoint", str(path)]) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "evil.pt" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "EVIL_RAN").exists()


def _mutate(tmp_path, fn):
    sd = reviewed_state_dict(SMALL)
    fn(sd)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    return path


@pytest.mark.parametrize(
    "mutation, message",
    [
        (lambda sd: sd.pop("transformer_blocks.1.ffn.3.lora.lora_B"), "1 missing"),
        (lambda sd: sd.update({"extra.weight": torch.zeros(2)}), "1 unexpected (first: extra.weight)"),
        (lambda sd: sd.pop("state_embedding.weight"), "tensor 'state_embedding.weight' is missing"),
        (lambda sd: sd.update({"transformer_blocks.0.norm1.weight": torch.zeros(5)}), "has shape (5,)"),
        (lambda sd: sd["action_head.bias"].fill_(float("nan")), "NaN"),
    ],
)
def test_damaged_state_dicts_are_refused_with_the_key(tmp_path, capsys, mutation, message):
    path = _mutate(tmp_path, mutation)
    assert main(["info", "--checkpoint", str(path), "--num-heads", "4"]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_other_architecture_is_refused(tmp_path, capsys):
    path = tmp_path / "resnet.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 2)).state_dict(), path)
    assert main(["info", "--checkpoint", str(path)]) == 1
    assert "not a FLAG-TRADER checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"hello world, not a model", "neither a safetensors nor a torch checkpoint"),
    ],
)
def test_non_checkpoints_are_refused(tmp_path, capsys, content, message):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    assert main(["info", "--checkpoint", str(path)]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
def test_truncated_checkpoints_are_refused(tmp_path, capsys, fmt):
    if fmt == "torch":
        path, _ = _reviewed_file(tmp_path, "bare")
    else:
        path = save_checkpoint(build_model(PRESETS["demo"]), tmp_path / "c.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert main(["info", "--checkpoint", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and ("truncated" in err or "not a readable" in err)


def test_config_contradicting_tensors_is_refused(tmp_path):
    path, _ = _reviewed_file(tmp_path, "model", config={"state_dim": 49, "max_length": 16})
    with pytest.raises(FlagcoreError, match="config says state_dim=49 but the tensors give 60"):
        load_checkpoint(path)


def test_missing_file(tmp_path, capsys):
    assert main(["info", "--checkpoint", str(tmp_path / "nope.pt")]) == 1
    assert "no such checkpoint file" in capsys.readouterr().err


def test_import_round_trip_keeps_source_hash(tmp_path):
    path, _ = _reviewed_file(tmp_path, "bare")
    out = import_checkpoint(path, tmp_path / "x.safetensors", num_heads=4)
    _, info = read_checkpoint(out)
    from flagcore.models.checkpoint import file_sha256

    assert info.meta.provenance["source_sha256"] == file_sha256(path)


def test_safetensors_header_length_starting_with_pickle_opcode(tmp_path):
    """A header length whose low byte is 0x80 (the pickle PROTO opcode) is still safetensors."""
    from flagcore.models.checkpoint import file_kind

    path = tmp_path / "x.safetensors"
    path.write_bytes(b'\x80\x17\x00\x00\x00\x00\x00\x00{"__metadata__": {}}')
    assert file_kind(path) == "safetensors"
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8")  # a legacy torch.save stream
    assert file_kind(legacy) == "torch"
