"""The local-model allow-list: only folders inside the models folder, safetensors only, no model code."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import GPT2_TOKENS, tiny_gpt2
from transformers import GPT2LMHeadModel

from lora_core.models.paths import allowed_models_dir, local_model_dir
from lora_core.models.sources import load_model, source_info
from lora_core.serve.settings import Settings, load_settings
from lora_core.settings_file import REPO_ROOT
from lora_core.training import finetune


def save_tiny(folder: Path) -> Path:
    """A one-block GPT-2 on GPT-2's own vocabulary (its tokenizer loads beside it), saved as a folder."""
    tiny_gpt2(n_layer=1, **GPT2_TOKENS).save_pretrained(folder)
    return folder


def test_models_folder_comes_from_settings_relative_to_the_file(models_root, tmp_path):
    assert allowed_models_dir() == models_root.resolve()
    assert Settings().models_path == REPO_ROOT / "models"               # built-in default: the repo's models/
    assert load_settings(REPO_ROOT / "lora_lab.toml").models_path == REPO_ROOT / "models"


def test_model_inside_the_folder_loads_by_name_or_path(models_root):
    save_tiny(models_root / "tiny")
    by_name, _ = load_model("tiny", device="cpu")                       # a folder name inside models_dir
    by_path, tok = load_model(str(models_root / "tiny"), device="cpu")
    assert torch.equal(by_name.transformer.wte.weight, by_path.transformer.wte.weight)
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert source_info("tiny").available


def test_model_outside_the_folder_is_refused_and_says_where_models_go(models_root, tmp_path):
    outside = save_tiny(tmp_path / "outside")
    with pytest.raises(ValueError) as err:
        load_model(str(outside))
    msg = str(err.value)
    assert "outside the models folder" in msg and str(models_root.resolve()) in msg and "models_dir" in msg


@pytest.mark.parametrize("name", ["../outside", "models/../outside", "tiny/../../outside"])
def test_dot_dot_cannot_leave_the_folder(models_root, tmp_path, monkeypatch, name):
    save_tiny(tmp_path / "outside")
    save_tiny(models_root / "tiny")
    monkeypatch.chdir(tmp_path)                                         # "models/.." would be tmp_path itself
    with pytest.raises(ValueError, match="outside the models folder"):
        load_model(name)
    with pytest.raises(ValueError, match="outside the models folder"):
        load_model(f"{models_root}/../outside")                        # an absolute path with ..


def test_symlinks_cannot_escape(models_root, tmp_path):
    outside = save_tiny(tmp_path / "outside")
    (models_root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match=r"resolves to .*outside.*outside the models folder"):
        load_model("link")
    half = models_root / "half"                                          # a real folder, one file linked out
    half.mkdir()
    shutil.copy(outside / "config.json", half / "config.json")
    (half / "model.safetensors").symlink_to(outside / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors links to .*outside"):
        load_model("half")


def test_a_symlink_that_stays_inside_is_fine(models_root):
    save_tiny(models_root / "real")
    (models_root / "alias").symlink_to(models_root / "real", target_is_directory=True)
    assert local_model_dir("alias") == (models_root / "real").resolve()


def test_pickle_only_folder_is_refused(models_root):
    folder = models_root / "pickled"
    save_tiny(folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(ValueError) as err:
        load_model("pickled")
    msg = str(err.value)
    assert "no pickle loading" in msg and "pytorch_model.bin" in msg and str(models_root.resolve()) in msg
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(ValueError, match=r"no \*\.safetensors weights"):
        load_model("pickled")


def test_auto_map_never_runs_the_models_own_code(models_root, tmp_path):
    folder = save_tiny(models_root / "custom")
    marker = tmp_path / "ran"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\nraise SystemExit('evil code ran')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    model, _ = load_model("custom", device="cpu")                       # a built-in architecture: its own code
    assert type(model) is GPT2LMHeadModel and not marker.exists()
    config["model_type"] = "evil"                                        # only the model's code could build it
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"model_type='evil'.*never run"):
        load_model("custom")
    assert not marker.exists()


def test_no_loader_passes_trust_remote_code_true():
    root = Path(__file__).resolve().parents[1]
    for path in [*(root / "lora_core").rglob("*.py"), *(root / "pages").glob("*.py")]:
        text = path.read_text(encoding="utf-8")
        assert "trust_remote_code=True" not in text, path
        assert "torch.load(" not in text, path


def test_named_models_need_no_folder(models_root):
    os.rmdir(models_root)                                                # the folder need not even exist
    model, _ = load_model("distilgpt2-random", device="cpu")
    assert model.config.n_layer == 6


def test_cli_refuses_a_folder_outside_and_says_where(models_root, tmp_path, capsys):
    outside = save_tiny(tmp_path / "outside")
    with pytest.raises(SystemExit) as exit_:
        finetune.main(["--model", str(outside), "--steps", "1", "--out", str(tmp_path / "run")])
    assert exit_.value.code == 2
    assert str(models_root.resolve()) in capsys.readouterr().err
