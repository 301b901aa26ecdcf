"""An uploaded adapter .zip is checked completely before use; each bad upload names its problem."""

import io
import json
import zipfile

import pytest
import torch
from conftest import tiny_gpt2, tiny_llama
from peft import PeftModel
from safetensors.torch import load as load_st
from safetensors.torch import save as save_st

import lora_core as lc
from lora_core import serve

LIMIT = 1_000_000
CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
A0 = "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"


def trained(make, **kw) -> torch.nn.Module:
    """A model with a non-zero adapter (B random), so loading the wrong thing would show in the logits."""
    model = make()
    lc.inject_lora(model, lc.LoraConfig(init_lora_weights=False, **kw))
    return model


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def make_zip(files: dict[str, bytes] | list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in (files.items() if isinstance(files, dict) else files):
            zf.writestr(name, content)
    return buffer.getvalue()


@pytest.fixture
def good() -> dict[str, bytes]:
    """The two files of a valid r=4 c_attn adapter for tiny_gpt2."""
    return members(lc.adapter_zip(trained(tiny_gpt2, r=4, lora_alpha=8, target_modules=["c_attn"])))


def with_config(good: dict[str, bytes], **changes) -> bytes:
    config = json.loads(good[CONFIG]) | changes
    return make_zip({CONFIG: json.dumps(config).encode(), WEIGHTS: good[WEIGHTS]})


def with_tensors(good: dict[str, bytes], change) -> bytes:
    tensors = load_st(good[WEIGHTS])
    change(tensors)
    return make_zip({CONFIG: good[CONFIG], WEIGHTS: save_st(tensors)})


@pytest.mark.parametrize("make,kw", [
    (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"], bias="lora_only")),
    (tiny_gpt2, dict(r=2, lora_alpha=4, target_modules=["c_attn", "wte"])),
    (tiny_llama, dict(r=4, lora_alpha=16, target_modules="all-linear", modules_to_save=["lm_head"])),
], ids=["gpt2-bias", "gpt2-embedding", "llama-saved"])
def test_good_zip_loads_exactly_like_the_folder(make, kw, tmp_path, tokens):
    src = trained(make, **kw)
    data = lc.adapter_zip(src)
    lc.save_adapter(src, tmp_path)
    target = make()
    cfg, tensors = serve.read_adapter_upload(data, target, LIMIT, max_r=8)
    assert not lc.lora_layers(target)                                # reading touches nothing
    assert cfg.r == kw["r"] and set(tensors) == set(lc.adapter_state_dict(src))
    from_zip = serve.load_adapter_zip(target, data, LIMIT, max_r=8).eval()
    from_dir = lc.load_adapter(make(), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(from_zip(tokens).logits, from_dir(tokens).logits)
        assert torch.equal(from_zip(tokens).logits, src.eval()(tokens).logits)


def test_peft_reads_the_same_zip(tmp_path, tokens):
    src = trained(tiny_gpt2, r=4, lora_alpha=8, target_modules=["c_attn"])
    zipfile.ZipFile(io.BytesIO(lc.adapter_zip(src))).extractall(tmp_path)
    theirs = PeftModel.from_pretrained(tiny_gpt2(), tmp_path).eval()
    ours = serve.load_adapter_zip(tiny_gpt2(), lc.adapter_zip(src), LIMIT).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens).logits, theirs(tokens).logits, rtol=1e-5, atol=1e-5)


def test_adapter_state_dict_is_a_copy_and_the_round_trip_is_bit_exact(tmp_path):
    src = trained(tiny_llama, r=4, target_modules="all-linear")
    snapshot = lc.adapter_state_dict(src)
    params = dict(src.named_parameters())
    layer = params["model.layers.0.self_attn.q_proj.lora_B.default.weight"]
    before = snapshot["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"].clone()
    with torch.no_grad():
        layer.add_(1.0)                                               # training goes on ...
    after = snapshot["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    assert torch.equal(after, before) and after.data_ptr() != layer.data_ptr()   # ... the snapshot does not move
    lc.save_adapter(src, tmp_path)
    back = lc.adapter_state_dict(lc.load_adapter(tiny_llama(), tmp_path))
    now = lc.adapter_state_dict(src)
    assert back.keys() == now.keys() and all(torch.equal(back[k], now[k]) for k in now)
    assert not list(tmp_path.glob("*.tmp"))


def bad_cases(good: dict[str, bytes]) -> dict[str, tuple[bytes, str]]:
    """name: (upload, a piece of the message that names the problem)."""
    bomb = make_zip({CONFIG: good[CONFIG], WEIGHTS: b"\0" * (LIMIT + 1)})
    return {
        "not a zip": (b"just some text, not a zip", "not a readable zip archive"),
        "empty": (b"", "empty (0 bytes)"),
        "oversize": (b"x" * (LIMIT + 1), f"{LIMIT + 1:,} bytes, over this server's limit: at most {LIMIT:,}"),
        "zip bomb": (bomb, f"'{WEIGHTS}' unpacks to more than {LIMIT:,} bytes"),
        "extra member": ({**good, "notes.txt": b"hi"}, "member 'notes.txt' is not allowed"),
        "extra pickle": ({**good, "optimizer.pkl": b"\x80\x04."}, "member 'optimizer.pkl' is not allowed"),
        "path traversal": ({CONFIG: good[CONFIG], f"../{WEIGHTS}": good[WEIGHTS]}, f"member '../{WEIGHTS}'"),
        "in a folder": ({f"x/{CONFIG}": good[CONFIG], WEIGHTS: good[WEIGHTS]}, f"member 'x/{CONFIG}'"),
        "missing file": ({CONFIG: good[CONFIG]}, f"holds {WEIGHTS} 0 times"),
        "twice": ([(CONFIG, good[CONFIG]), (CONFIG, good[CONFIG]), (WEIGHTS, good[WEIGHTS])],
                  f"holds {CONFIG} 2 times"),
        "bad json": ({CONFIG: b"{not json", WEIGHTS: good[WEIGHTS]}, f"{CONFIG} is not valid JSON"),
        "not utf-8": ({CONFIG: b"\xff\xfe{}", WEIGHTS: good[WEIGHTS]}, f"{CONFIG} is not UTF-8"),
        "json list": ({CONFIG: b"[1, 2]", WEIGHTS: good[WEIGHTS]}, "must hold a JSON object, not list"),
        "not lora": (with_config(good, peft_type="PREFIX_TUNING"), "peft_type='PREFIX_TUNING'"),
        "dora without magnitudes": (with_config(good, use_dora=True), "lora_magnitude_vector"),
        "r=0": (with_config(good, r=0), "r=0 is not allowed"),
        "r=true": (with_config(good, r=True), "r=True is not allowed"),
        "r over limit": (with_config(good, r=512), "r=512 is over this server's limit: at most 256"),
        "alpha": (with_config(good, lora_alpha=-1), "lora_alpha=-1 is not allowed"),
        "no targets": (with_config(good, target_modules=None), "target_modules=None"),
        "targets type": (with_config(good, target_modules=5), "target_modules=5 is not allowed"),
        "targets elsewhere": (with_config(good, target_modules=["q_proj"]), "matches no module of this model"),
        "rslora type": (with_config(good, use_rslora="yes"), "use_rslora='yes' is not allowed"),
        "not safetensors": ({CONFIG: good[CONFIG], WEIGHTS: b"\x80\x04K\x01."}, "not a readable safetensors"),
        "wrong shape": (with_tensors(good, lambda t: t.__setitem__(A0, torch.zeros(2, 32))),
                        f"'{A0}' has shape (2, 32), but this model needs (4, 32) (A is (r, in))"),
        "unknown tensor": (with_tensors(good, lambda t: t.__setitem__("base_model.model.evil.weight", torch.zeros(1))),
                           "'base_model.model.evil.weight' is not allowed: it maps to no LoRA layer"),
        "missing tensor": (with_tensors(good, lambda t: t.pop(A0)), f"'{A0}' is missing"),
        "nan": (with_tensors(good, lambda t: t[A0].view(-1).__setitem__(3, float("nan"))),
                f"'{A0}' holds 1 NaN or inf values"),
        "inf": (with_tensors(good, lambda t: t[A0].fill_(float("inf"))), f"'{A0}' holds 128 NaN or inf"),
        "integer dtype": (with_tensors(good, lambda t: t.__setitem__(A0, torch.zeros(4, 32, dtype=torch.int32))),
                          f"'{A0}' has dtype torch.int32, which is not allowed"),
    }


CASES = ["not a zip", "empty", "oversize", "zip bomb", "extra member", "extra pickle", "path traversal", "in a folder",
         "missing file", "twice", "bad json", "not utf-8", "json list", "not lora", "dora without magnitudes", "r=0",
         "r=true", "r over limit", "alpha", "no targets", "targets type", "targets elsewhere", "rslora type",
         "not safetensors", "wrong shape", "unknown tensor", "missing tensor", "nan", "inf", "integer dtype"]


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("case", CASES)
def test_each_bad_upload_is_a_value_error_that_names_the_problem(good, case):
    upload, message = bad_cases(good)[case]
    data = upload if isinstance(upload, bytes) else make_zip(upload)
    model = tiny_gpt2()
    with pytest.raises(ValueError) as err:
        serve.load_adapter_zip(model, data, LIMIT, max_r=256)
    assert message in str(err.value), str(err.value)
    assert not lc.lora_layers(model) and not hasattr(model, "lora_configs")   # nothing was touched


def test_every_case_is_listed(good):
    assert sorted(bad_cases(good)) == sorted(CASES)


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_a_bad_upload_keeps_the_adapter_already_loaded(good, tokens):
    model = serve.load_adapter_zip(tiny_gpt2(), make_zip(good), LIMIT).eval()
    with torch.no_grad():
        before = model(tokens).logits
        for case in ("nan", "wrong shape", "missing tensor"):
            upload, _ = bad_cases(good)[case]
            with pytest.raises(ValueError):
                serve.load_adapter_zip(model, upload, LIMIT)
        assert torch.equal(model(tokens).logits, before)
