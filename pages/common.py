"""What every page shares: inline errors that keep the last good state, and the model cache.

Pages hold no math. They collect inputs, call lora_core, and draw with lora_core.viz.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import TypeVar

import streamlit as st

import lora_core as lc
from lora_core.admission import TrainingSlots
from lora_core.settings import Settings, load_settings

log = logging.getLogger("lora_lab")

T = TypeVar("T")


def last_good(key: str, build: Callable[[], T]) -> T | None:
    """Run `build()`; on a ValueError show its message inline and return the last good result.

    The core's ValueErrors name the field, the value and what is allowed, so the message is
    shown as is. The page keeps drawing the previous picture instead of crashing or going blank.
    """
    try:
        value = build()
    except ValueError as err:
        st.error(f"{err}", icon="⚠️")
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
    return lc.base_in_precision(model, precision), tok


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
def settings() -> Settings:
    """The server's limits (lora_lab.toml), read once."""
    return load_settings()


@st.cache_resource(show_spinner=False)
def training_slots() -> TrainingSlots:
    """The server-wide training queue: the one cached object that is meant to change."""
    s = settings()
    return TrainingSlots(s.training_slots, s.heartbeat_seconds)


def session_id() -> str:
    """A stable id for this browser session (for the training queue)."""
    return st.session_state.setdefault("session_id", uuid.uuid4().hex)


def show_unexpected(err: Exception, where: str) -> None:
    """A bug, not bad input: a short message, the details folded away, a log line; the session goes on."""
    log.exception("unexpected error in %s", where, exc_info=err)
    st.error(f"Something went wrong in {where}. Your settings and runs are kept: try again, or pick another "
             "page. (This is a bug in LoRA Lab, not something you did.)")
    with st.expander("details"):
        st.exception(err)
