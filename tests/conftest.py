"""What every test shares: the one tiny GPT-2 (Conv1D) and tiny Llama (nn.Linear), and the one way to run a page.

The tiny models draw their weights from a local `torch.Generator`, never from a reseeded global RNG: the
house rule for code on a shared server, kept by the tests too. `tiny_gpt2(seed)` is the same model every
time it is called with the same seed and overrides, which the oracle tests rely on (two copies, one base).

`app_page("parameters")` runs a page the way a browser opens it: app.py first (page config, sidebar,
st.navigation over pages.common.PAGES), then the page, with one timeout for every page.
"""

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network

import pytest
import torch
import torch.nn as nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel

import lora_core as lc

try:  # the pages need streamlit and plotly; a GPU machine runs `pytest -m gpu` (make gpu-check) without either
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest

    from pages.common import HOME, PAGES
except ModuleNotFoundError as err:
    if (err.name or "").split(".")[0] not in ("streamlit", "plotly"):
        raise
    PagesManager = AppTest = None
    HOME, PAGES = "app.py", ()

ROOT = Path(__file__).resolve().parents[1]


# --- the tiny models ---------------------------------------------------------------------------------------------
GPT2_TOKENS = dict(vocab_size=50257, bos_token_id=50256, eos_token_id=50256)  # GPT-2's BPE: its tokenizer fits


def tiny_gpt2_config(dropout: float | None = None, **overrides: Any) -> GPT2Config:
    """2 blocks, width 32, 64 tokens, 32 positions; any GPT2Config field can be overridden.

    `dropout` sets GPT-2's three dropout rates at once (its default is 0.1 each).
    """
    fields = dict(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0)
    if dropout is not None:
        fields |= dict(resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    return GPT2Config(**fields | overrides)


def tiny_llama_config(dropout: float | None = None, **overrides: Any) -> LlamaConfig:
    """2 layers, width 32, 4 query and 2 key-value heads, 64 tokens, 32 positions; any LlamaConfig field."""
    fields = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=64, max_position_embeddings=32,
                  bos_token_id=0, eos_token_id=0, pad_token_id=0)
    if dropout is not None:
        fields |= dict(attention_dropout=dropout)
    return LlamaConfig(**fields | overrides)


def tiny_gpt2(seed: int = 0, head: type[PreTrainedModel] = GPT2LMHeadModel, dropout: float | None = None,
              **overrides: Any) -> PreTrainedModel:
    """A tiny GPT-2 with `head` (GPT2LMHeadModel, GPT2ForSequenceClassification, ...) in eval mode, its weights
    drawn from `torch.Generator().manual_seed(seed)`. Overrides are GPT2Config fields (vocab_size, n_embd, ...)."""
    return _build(head, tiny_gpt2_config(dropout, **overrides), seed)


def tiny_llama(seed: int = 0, head: type[PreTrainedModel] = LlamaForCausalLM, dropout: float | None = None,
               **overrides: Any) -> PreTrainedModel:
    """A tiny Llama with `head` in eval mode, weights from `torch.Generator().manual_seed(seed)`."""
    return _build(head, tiny_llama_config(dropout, **overrides), seed)


def _build(head: type[PreTrainedModel], config, seed: int) -> PreTrainedModel:
    # The constructor draws its own init from the global RNG; fork_rng gives it a private copy of that stream
    # (so the caller's is where it was), and every parameter is then drawn again from the local generator.
    with torch.random.fork_rng(devices=[]):
        model = head(config)
    _init_weights(model, torch.Generator().manual_seed(seed))
    return model.eval()


def _init_weights(model: nn.Module, gen: torch.Generator) -> None:
    """Hugging Face's init for GPT-2 and Llama, drawn from `gen`: matrices and embeddings N(0, initializer_range²),
    GPT-2's residual projections c_proj scaled by 1/√(2·n_layer), biases 0, norms 1, a padding row 0.
    A tied weight (GPT-2's lm_head is wte) is drawn once."""
    cfg = model.config
    std = cfg.initializer_range
    seen: set[int] = set()
    with torch.no_grad():
        for name, module in model.named_modules():
            norm = "LayerNorm" in type(module).__name__ or "RMSNorm" in type(module).__name__
            for leaf, p in module.named_parameters(recurse=False):
                if id(p) in seen:
                    continue
                seen.add(id(p))
                if norm:
                    p.fill_(1.0 if leaf == "weight" else 0.0)
                elif leaf == "bias":
                    p.zero_()
                else:
                    residual = cfg.model_type == "gpt2" and name.endswith("c_proj")
                    p.normal_(0.0, std / math.sqrt(2 * cfg.n_layer) if residual else std, generator=gen)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()


MODELS = {"gpt2": tiny_gpt2, "llama": tiny_llama}


@pytest.fixture(params=sorted(MODELS))
def tiny_model(request) -> PreTrainedModel:
    return MODELS[request.param]()


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-model training tests, put back afterwards. Tiny matmuls run fastest on
    one thread; with two, a busy 2-core CI box spends most of its time at OpenMP barriers (measured: ~12x slower per
    step under load). A module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def adapter_zip() -> bytes:
    """A non-zero r=4 c_attn adapter on distilgpt2-random (the pages' offline base), zipped as PEFT writes it."""
    model, _ = lc.load_model("distilgpt2-random", device="cpu")
    gen = torch.Generator().manual_seed(0)
    lc.inject_lora(model, lc.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], init_lora_weights="gaussian"),
                   generator=gen)
    with torch.no_grad():
        for _, layer in lc.lora_layers(model):
            layer.adapter().B.normal_(0, 0.05, generator=gen)
    return lc.adapter_zip(model)


@pytest.fixture
def models_root(tmp_path, monkeypatch):
    """An allowed models folder, set the way a teacher does: models_dir in a settings file."""
    (tmp_path / "lab.toml").write_text('[models]\nmodels_dir = "models"\n')  # relative to the file
    monkeypatch.setenv("LORA_LAB_SETTINGS", str(tmp_path / "lab.toml"))
    (tmp_path / "models").mkdir()
    return tmp_path / "models"


# --- the pages ------------------------------------------------------------------------------------------------------
PAGE_TIMEOUT = 300  # s per script run: the ceiling for the slowest (Fine-tuning trains, Claims computes evidence)
PAGE_FILES = {Path(p.path).stem: p.path for p in PAGES}  # "parameters" -> "pages/parameters.py", in teaching order


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium through Playwright (browser_util), one per test module that asks for it."""
    from browser_util import chromium
    with chromium() as b:
        yield b


@pytest.fixture
def app_page(monkeypatch) -> Callable[..., AppTest]:
    """A factory: `app_page(name, session_state={...})` returns an AppTest that has run app.py and, through its
    st.navigation, the registry's page `name`; it checks that this first run raised nothing, that app.py's guard
    caught nothing, and that app.py's sidebar is drawn around the page.

    `session_state` is set before the first run, as another page would have left it (the Fine-tuning page's
    run, say). Call it more than once for more than one browser session; `at.switch_page(path)` moves on.
    """
    if AppTest is None:
        pytest.skip("streamlit is not installed (make setup installs it)")
    # `streamlit run` leaves Streamlit's old pages/-folder mode for good at app.py's first st.navigation call.
    # AppTest turns that mode back on before every run when a pages/ folder sits beside the script, and would
    # then run a page it switched to on its own, without app.py. Keep it off, as the server does.
    init = PagesManager.__init__

    def navigation_mode(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", navigation_mode)
    monkeypatch.setattr(PagesManager, "uses_pages_directory", PagesManager.uses_pages_directory)

    def open_page(name: str = "home", session_state: Mapping[str, Any] | None = None) -> AppTest:
        if name not in PAGE_FILES:
            raise ValueError(f"name={name!r} is not allowed: use one of {', '.join(PAGE_FILES)}")
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=PAGE_TIMEOUT)
        for key, value in (session_state or {}).items():
            at.session_state[key] = value
        if PAGE_FILES[name] != HOME:  # Home is app.py's default page, at the URL without a path
            at.switch_page(PAGE_FILES[name])
        at.run()
        assert not at.exception, (name, at.exception)
        assert not any("Something went wrong" in e.value for e in at.error), (name, errors(at))
        assert [link.proto.label for link in at.sidebar.get("page_link")] == [p.title for p in PAGES], name
        return at
    return open_page


def metrics(at: AppTest) -> dict[str, str]:
    """What the page shows in st.metric, by label."""
    return {m.label: m.value for m in at.metric}


def errors(at: AppTest) -> str:
    """Every st.error message on the page, one per line."""
    return "\n".join(e.value for e in at.error)


def load_ours_into_peft(ours, theirs):
    """Perturb our trainable non-LoRA tensors (biases, saved heads), then load our adapter into PEFT's model.

    Perturbed, so that a bias or a head copy is really compared and not just equal to the base's default; the
    perturbation comes from its own seeded generator, so the global RNG neither moves nor matters.
    Returns both models in eval mode.
    """
    from peft import set_peft_model_state_dict

    import lora_core as lc

    gen = torch.Generator().manual_seed(0)  # a private stream: the values never depend on the tests run before
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if p.requires_grad and ".lora_" not in name:
                p.add_(torch.randn(p.shape, generator=gen).to(p) * 0.1)
    result = set_peft_model_state_dict(theirs, lc.adapter_state_dict(ours))
    assert not result.unexpected_keys
    return ours.eval(), theirs.eval()
