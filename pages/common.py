"""What every page shares, written once: the page registry, session keys, inline errors that keep the last
good state, the model caches, the model picker, matched-module helpers and the upload widget.

Pages hold no math. They collect inputs, call lora_core, and draw with lora_core.viz.
"""

from __future__ import annotations

import functools
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import streamlit as st
from streamlit import runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

import lora_core as lc
from lora_core.config import ALL_LINEAR as ALL_LINEAR  # re-exported: the library's name for every linear layer
from lora_core.models.sources import LOADABLE, ModelSource
from lora_core.serve.admission import TrainingSlots
from lora_core.serve.board import Board
from lora_core.serve.runs import RunRegistry
from lora_core.serve.settings import Settings, load_settings
from lora_core.serve.sweep import Sweeps
from lora_core.serve.teacher import TeacherGate, teacher_token
from lora_core.serve.upload_limits import upload_limit
from lora_core.teach.ledger_views import model_facts as facts_of

log = logging.getLogger("lora_lab")

T = TypeVar("T")


# --- the page registry: app.py's navigation and Home's links both read it ------------------------------
@dataclass(frozen=True)
class PageEntry:
    """One page: its file, its title in the sidebar, its icon, and the line Home links it with."""

    path: str
    title: str
    icon: str
    blurb: str


HOME = "pages/home.py"
PAGES = (
    PageEntry(HOME, "Home: what LoRA is", ":material/home:",
              "**Home**: LoRA in one picture, with live shapes and counts for your r and α"),
    PageEntry("pages/parameters.py", "Parameters: the ledger", ":material/calculate:",
              "**Parameters**: the ledger for any model, r and target set, checked against PEFT"),
    PageEntry("pages/anatomy.py", "Anatomy: targets, dropout, bias, init", ":material/biotech:",
              "**Anatomy**: which layers get LoRA, where dropout acts, bias modes, init variants"),
    PageEntry("pages/rank_svd.py", "Rank and SVD", ":material/ssid_chart:",
              "**Rank and SVD**: why a low-rank update is enough, ΔW's spectrum, subspace similarity"),
    PageEntry("pages/scaling.py", "Scaling: α, r, rsLoRA", ":material/balance:",
              "**Scaling**: α/r against rsLoRA's α/√r, and α as a learning rate under Adam"),
    PageEntry("pages/variants.py", "Variants: DoRA, LoRA+, LoRA-FA, OLoRA", ":material/alt_route:",
              "**Variants**: DoRA's magnitude and direction, LoRA+, LoRA-FA, OLoRA and PiSSA, measured on SmolLM2"),
    PageEntry("pages/finetune.py", "Live fine-tuning", ":material/model_training:",
              "**Live fine-tuning**: train SmolLM2 or distilgpt2 with LoRA, then merge and export"),
    PageEntry("pages/room.py", "Room: the workshop's board", ":material/groups:",
              "**Room**: everyone's shared runs on one board, a teacher's sweep filling the paper's figure"),
    PageEntry("pages/adapters.py", "Load an adapter", ":material/upload_file:",
              "**Load an adapter**: upload a PEFT adapter, see what it holds and what it changes"),
    PageEntry("pages/merging.py", "Merging studio", ":material/merge:",
              "**Merging studio**: train two adapters on two tasks, merge them PEFT's eleven ways, score both tasks"),
    PageEntry("pages/qlora.py", "QLoRA and memory", ":material/memory:",
              "**QLoRA and memory**: NF4 from scratch and what a training step costs"),
    PageEntry("pages/memory.py", "Memory: estimated and measured", ":material/straighten:",
              "**Memory**: one real training step's bytes, counted, beside the estimator's formula"),
    PageEntry("pages/speed.py", "Speed: LoRA against its floor", ":material/speed:",
              "**Speed**: a LoRA training step against the frozen base's own, measured"),
    PageEntry("pages/interview.py", "Interview prep", ":material/quiz:",
              "**Interview prep**: randomised questions whose answers lora_core computes"),
    PageEntry("pages/claims.py", "Claims check", ":material/fact_check:",
              "**Claims check**: what the usual LoRA write-ups get right and wrong, with evidence"),
    PageEntry("pages/replays.py", "Research replays", ":material/science:",
              "**Research replays**: seven findings of four LoRA papers re-measured on SmolLM2, each with a verdict"),
)


def navigation_pages() -> list[st.Page]:
    """The registry as st.Page objects, Home the default, for app.py's st.navigation."""
    return [st.Page(p.path, title=p.title, icon=p.icon, default=p.path == HOME) for p in PAGES]


# --- session keys more than one page reads -----------------------------------------------------------------
RUN = "finetune:run"                     # the Fine-tuning page's LiveRun; Load an adapter offers its adapter
RUN_ID = "finetune:run_id"               # that run's id in the server's RunRegistry (and in the page's URL)
TRAINED_ADAPTERS = "trained_adapters"    # {label: adapter_directions}: written by Fine-tuning, read by Rank/SVD
SESSION_ID = "session_id"                # this session's id where no Streamlit server runs it (AppTest)
SHARED = "room:shared"                   # {run_id: {"id", "key", "nickname"}}: this session's results on the board


# What Markdown would act on inside a message (intraword underscores are safe: lora_alpha stays lora_alpha).
_MARKDOWN = re.compile(r"([\\`*~$])")


def as_text(message: str) -> str:
    """`message` for st.error/st.success, shown as typed: Markdown's emphasis, code, math and escapes escaped.

    Messages quote what the learner gave, such as the regex '(.*)*X' or '.*\\.q_proj', which Markdown would
    turn into italics and drop the backslash of.
    """
    return _MARKDOWN.sub(r"\\\1", str(message))


def last_good(key: str, build: Callable[[], T]) -> T | None:
    """Run `build()`; on a ValueError show its message inline and return the last good result.

    The core's ValueErrors name the field, the value and what is allowed, so the message is
    shown as is. The page keeps drawing the previous picture instead of crashing or going blank.
    """
    try:
        value = build()
    except ValueError as err:
        st.error(as_text(err), icon="⚠️")
        previous = st.session_state.get(f"last_good:{key}")
        if previous is not None:
            st.caption("Showing the last valid settings until this is fixed.")
        return previous
    st.session_state[f"last_good:{key}"] = value
    return value


@st.cache_resource(show_spinner="Loading the model (the first SmolLM2 load converts it once, ~16 s)…")
def base_model(name: str):
    """(model, tokenizer), loaded once per server and shared by every session. Never mutate it."""
    return lc.load_model(name)


@st.cache_resource(show_spinner="Preparing the base in the chosen precision (NF4 quantizes once, ~5 s)…")
def base_variant(name: str, precision: str):
    """The shared base in fp32, bf16 or NF4 (a separate cached copy; the fp32 one is never touched)."""
    model, tok = base_model(name)
    return lc.quant.base_in_precision(model, precision), tok


def session_model(name: str, slot: str = "default"):
    """This session's own module tree over the shared frozen base (no weight memory copied).

    Inject LoRA into the returned model freely; the cached base is never written.
    """
    key = f"session_model:{slot}:{name}"
    if key not in st.session_state:
        model, tok = base_model(name)
        st.session_state[key] = (lc.shared_base_copy(model), tok)
    return st.session_state[key]


@st.cache_data(show_spinner=False)
def ledger(model: str, cfg: lc.LoraConfig) -> lc.Ledger:
    """The parameter ledger for a shipped config (meta device; cached per config)."""
    return lc.count_lora_parameters(model, cfg)


@st.cache_resource(show_spinner=False)
def meta_model(name: str):
    """A weightless model for reading module names and shapes. Shared by sessions: never inject into it."""
    return lc.build_on_meta(name)


@st.cache_data(show_spinner=False)
def model_facts(name: str) -> dict:
    """Candidate module names, layer count, model type and PEFT's default targets of a shipped config."""
    return facts_of(meta_model(name))


@st.cache_data(show_spinner=False)
def matched(name: str, cfg: lc.LoraConfig) -> list[str]:
    """The full names of the modules `cfg` wraps in a shipped config (PEFT's matching rules)."""
    return lc.matched_modules(meta_model(name), cfg)


# --- the model picker ----------------------------------------------------------------------------------------
@st.cache_data(ttl=60, show_spinner=False)
def model_sources() -> dict[str, ModelSource]:
    """Where each loadable model would come from, and whether it can load here (rechecked every minute)."""
    return {name: lc.models.source_info(name) for name in LOADABLE}


def model_picker(label: str, help: str | None = None, where: Any = st) -> str:
    """A selectbox over the models that can load here, on the server's default model."""
    sources = model_sources()
    names = [n for n, s in sources.items() if s.available]
    default = lc.models.default_model_name()
    return where.selectbox(label, names, index=names.index(default) if default in names else 0, help=help,
                           format_func=lambda n: f"{n} ({'pretrained' if sources[n].pretrained else 'random weights'})")


# --- uploads -----------------------------------------------------------------------------------------------------
def upload_widget(label: str, key: str, type: list[str], help: str = "", where: Any = st):
    """st.file_uploader whose size limit is the server's own (`key` in lora_lab.toml), not Streamlit's 200 MB."""
    limit = upload_limit(settings(), key)
    shown = label if limit.exact else f"{label} (at most {limit.label})"
    note = f"at most {limit.max_bytes:,} bytes ({key} in lora_lab.toml)"
    return where.file_uploader(shown, type=type, max_upload_size=limit.widget_mb,
                               help=f"{help} {note}" if help else note)


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    """The server's limits (lora_lab.toml), read once."""
    return load_settings()


@st.cache_resource(show_spinner=False)
def training_slots() -> TrainingSlots:
    """The server-wide training queue: the one cached object that is meant to change."""
    s = settings()
    return TrainingSlots(s.training_slots, s.heartbeat_seconds)


@st.cache_resource(show_spinner=False)
def run_registry() -> RunRegistry:
    """The server's live runs by id, so a reloaded tab finds its run (thread-safe, meant to change)."""
    return RunRegistry()


# --- the room: the board, the sweep and the teacher's gate, one per server (they live on disk and lock) ------------
@st.cache_resource(show_spinner=False)
def _room(folder: str, max_results: int) -> tuple[Board, Sweeps]:
    return Board(folder, max_results), Sweeps(folder)


def room_board() -> Board:
    """The room's board (board_dir in lora_lab.toml): every session reads and writes the same files."""
    s = settings()
    return _room(str(s.board_path), s.max_board_results)[0]


def room_sweeps() -> Sweeps:
    """The teacher's running sweep, in the board's folder."""
    s = settings()
    return _room(str(s.board_path), s.max_board_results)[1]


@st.cache_resource(show_spinner=False)
def _gate(token: str) -> TeacherGate:
    return TeacherGate(token)


def sweep_key() -> str:
    """This session's key for the teacher's sweep: its own random id, kept in the session (a reload is a new one)."""
    return st.session_state.setdefault("room:sweep_key", uuid.uuid4().hex)


def client_address() -> str:
    """The browser's network address as the server sees it (the TCP peer; "localhost" on the server's machine):
    the teacher gate slows wrong tokens per address."""
    return st.context.ip_address or "localhost"


def teacher_gate() -> TeacherGate:
    """The server-wide gate on the teacher's controls: its wait after wrong tokens is meant to be shared."""
    return _gate(teacher_token(settings().teacher_token))


def session_id() -> str:
    """This browser session's id: Streamlit's own, so the server can tell when the tab has gone."""
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else st.session_state.setdefault(SESSION_ID, uuid.uuid4().hex)


def session_alive(sid: str) -> bool:
    """Is session `sid` still connected? (Always True without a server, e.g. under AppTest.)"""
    return not runtime.exists() or runtime.get_instance().is_active_session(sid)


def let_go_of_closed_tabs() -> None:
    """Free the training slots of runs whose tab has closed, and drop runs nobody reloaded in time."""
    for run_id in run_registry().sweep(session_alive):
        training_slots().release(run_id)


# --- the error boundary: app.py's try around every page, and guarded_fragment around every fragment --------------
# An absolute path (POSIX, or Windows with a drive letter) of two or more parts: the last part is kept.
_PATH = re.compile(r"(?<![\w.~:/])(?:/[^\s/\\'\"():,;]+)+/([^\s/\\'\"():,;]+)"
                   r"|\b[A-Za-z]:\\(?:[^\s\\'\"():,;]+\\)*([^\s\\'\"():,;]+)")


def without_paths(text: str) -> str:
    """`text` with every absolute path cut to its file name: a learner sees 'uploads.py', never the server's tree."""
    return _PATH.sub(lambda m: m.group(1) or m.group(2), text)


@dataclass(frozen=True)
class Unexpected:
    """A bug a learner met: where, a reference that is also in the server log, and what is safe to show them."""

    where: str
    reference: str   # 8 hex digits, in the log line with the full traceback: a teacher greps for it
    summary: str     # the exception's type and message, paths cut to file names


def log_unexpected(err: Exception, where: str) -> Unexpected:
    """Log `err` with its full traceback under a new reference; return what a learner may see of it."""
    reference = uuid.uuid4().hex[:8]
    log.exception("unexpected error in %s (reference %s)", where, reference, exc_info=err)
    return Unexpected(where, reference, without_paths(f"{type(err).__name__}: {err}"))


def draw_unexpected(bug: Unexpected) -> None:
    """The learner's side of a bug: a short message with the reference, the type and message folded away."""
    st.error(f"Something went wrong in {bug.where}. Your settings and runs are kept: try again, or pick another "
             f"page. (This is a bug in LoRA Lab, not something you did. Reference: {bug.reference}.)")
    with st.expander("details"):
        st.text(bug.summary)
        st.caption(f"The full error is in the server's log under reference {bug.reference}.")


def show_unexpected(err: Exception, where: str) -> Unexpected:
    """A bug, not bad input: a short message, the details folded away, a log line; the session goes on.

    The traceback (with the server's file paths) goes to the log only; the page shows the error's type and
    message with paths cut to file names, and a reference that finds the log line.
    """
    bug = log_unexpected(err, where)
    draw_unexpected(bug)
    return bug


Draw = Callable[..., None]  # a function that draws part of a page


def guarded_fragment(where: str, run_every: float | None = None) -> Callable[[Draw], Draw]:
    """`@st.fragment(run_every=...)` with the page's error boundary, for every fragment in pages/.

    A fragment's own reruns never pass through app.py's try around the page, and Streamlit would print a
    raw traceback instead. Here a ValueError (bad input: its message names the field) is shown inline, and
    any other Exception is a bug: `show_unexpected(err, where)`. st.rerun and st.stop pass through (they
    are not Exceptions).
    """
    def decorate(draw: Draw) -> Draw:
        @functools.wraps(draw)  # keeps the name Streamlit identifies the fragment by
        def guarded(*args: Any, **kwargs: Any) -> None:
            try:
                draw(*args, **kwargs)
            except ValueError as err:
                st.error(as_text(err), icon="⚠️")
            except Exception as err:  # a bug: logged, and told to the learner
                show_unexpected(err, where)
        return st.fragment(guarded, run_every=run_every)
    return decorate
