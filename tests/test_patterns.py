"""Target matching never runs unbounded: a pathological regex is a ValueError within about a second.

The bound is checked in a subprocess against the wall clock, because a pattern that backtracks in
Python's `re` holds the interpreter for minutes and would hang pytest itself.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

import lora_core as lc
from lora_core.patterns import MATCH_SECONDS, TimedPattern

# Patterns that backtrack catastrophically over module names in `re` (the first froze a room),
# in the `regex` engine (the last), or both.
PATHOLOGICAL = [r"(.*)*X", r"(.*a){20}", r"(\w+\.?)+!", r"(x+x+)+y", r"((.)*)*Z", r"(.*){1,32000}[0-9]"]
WALL_BOUND_S = 3 * MATCH_SECONDS  # generous: the budget is MATCH_SECONDS, the rest is a busy CPU

CHILD = textwrap.dedent("""
    import json, sys, time
    import lora_core as lc
    out = {}
    for model in ("distilgpt2", "smollm2-135m"):
        lc.count_lora_parameters(model, lc.LoraConfig(target_modules=["c_attn"] if model == "distilgpt2"
                                                      else ["q_proj"]))  # build the meta model first
        for pattern in json.loads(sys.argv[1]):
            start = time.perf_counter()
            try:
                lc.count_lora_parameters(model, lc.LoraConfig(target_modules=pattern))
                result = "counted"
            except ValueError as err:
                result = str(err)
            out[f"{model} {pattern}"] = [time.perf_counter() - start, result]
    print(json.dumps(out))
""")


def test_pathological_patterns_end_within_a_second_each_in_a_subprocess():
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(PATHOLOGICAL)], capture_output=True,
                          text=True, timeout=240, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == 2 * len(PATHOLOGICAL)
    for case, (seconds, message) in results.items():
        assert seconds < WALL_BOUND_S, (case, seconds)
        assert message != "counted" and message.startswith("target_modules="), (case, message)
    slow = [m for _, m in results.values() if "backtracks" in m]
    assert slow, "at least one pattern must hit the time bound (else the bound is untested)"
    assert all("under 1 s" in m for m in slow)


def test_a_slow_pattern_names_the_field_and_the_value():
    model = lc.build_on_meta("distilgpt2")
    with pytest.raises(ValueError, match=r"target_modules='\(\.\*\)\{1,32000\}\[0-9\]' is not allowed.*backtracks"):
        lc.matched_modules(model, lc.LoraConfig(target_modules=r"(.*){1,32000}[0-9]"))


def test_layers_pattern_is_bounded_too():
    model = lc.build_on_meta("distilgpt2")
    cfg = lc.LoraConfig(target_modules=["c_attn"], layers_to_transform=[0], layers_pattern=["(.*){1,32000}[0-9]"])
    with pytest.raises(ValueError, match=r"layers_pattern='\(\.\*\)\{1,32000\}\[0-9\]' is not allowed"):
        lc.matched_modules(model, cfg)
    ok = lc.LoraConfig(target_modules=["c_attn"], layers_to_transform=[0, 2], layers_pattern=["h"])
    assert lc.matched_modules(model, ok) == ["transformer.h.0.attn.c_attn", "transformer.h.2.attn.c_attn"]


@pytest.mark.parametrize("pattern", [r".*\.c_attn", r".*(c_attn|c_proj)", r"transformer\.h\.[0-2]\..*",
                                     r".*h\.\d+\.mlp\.c_\w+", r"(?i).*C_ATTN", r".*\.(?!c_attn)c_\w+", r"lm_head"])
def test_same_matches_as_pythons_re_which_peft_uses(pattern):
    model = lc.build_on_meta("distilgpt2")
    names = [n for n, _ in model.named_modules() if n]
    ours = lc.matched_modules(model, lc.LoraConfig(target_modules=pattern))
    assert ours == [n for n in names if re.fullmatch(pattern, n)]
    assert ours, pattern


def test_invalid_pattern_is_the_same_value_error_as_before():
    with pytest.raises(ValueError, match=r"target_modules='\(unclosed' is not allowed: not a valid regular"):
        lc.LoraConfig(target_modules="(unclosed")
    with pytest.raises(ValueError, match=r"target_modules='\(\?P<x>a\)\(\?P<x>b\)' is not allowed: a valid regular"):
        TimedPattern("target_modules", "(?P<x>a)(?P<x>b)")
