"""The papers' own numbers (lora_core.research.papers): every replay has a quote, and every quote is well formed."""

import math

import pytest

from lora_core.research.papers import QUOTES, REPLAYS, quotes_for


def test_every_replay_has_at_least_one_quote():
    for replay in REPLAYS:
        assert quotes_for(replay), replay


def test_every_quote_names_a_known_replay_and_says_where_it_was_checked():
    for q in QUOTES:
        assert q.replay in REPLAYS, q
        for field in (q.source, q.where, q.setting, q.finding, q.unit, q.checked):
            assert isinstance(field, str) and field.strip(), q


def test_numbers_are_finite_floats_or_strings():
    for q in QUOTES:
        assert isinstance(q.numbers, dict), q
        for label, value in q.numbers.items():
            assert isinstance(label, str) and label, q
            assert isinstance(value, str | float) and not isinstance(value, bool), (q.where, label, value)
            if isinstance(value, float):
                assert math.isfinite(value), (q.where, label, value)


def test_unknown_replay_raises_naming_it_and_the_allowed_names():
    with pytest.raises(ValueError, match="nope") as err:
        quotes_for("nope")
    for replay in REPLAYS:
        assert replay in str(err.value)


def test_quotes_for_returns_only_that_replays_rows():
    assert all(q.replay == "rank" for q in quotes_for("rank"))
    assert sum(len(quotes_for(r)) for r in REPLAYS) == len(QUOTES)


def test_amplification_factor_is_the_ratio_of_table_7s_norms():
    """The paper's 21.5 is ||ΔWq||_F / ||U^T Wq V^T||_F at r=4 (6.91 / 0.32); a typo in either would show here."""
    r4 = next(q for q in quotes_for("amplification") if q.where.startswith("Table 7") and "r=4" in q.setting)
    factor = next(q for q in quotes_for("amplification") if "H.4" in q.where)
    ratio = r4.numbers["||ΔWq||_F"] / r4.numbers["||U^T Wq V^T||_F, U,V of ΔWq"]
    assert ratio == pytest.approx(factor.numbers["r=4"], abs=0.1)



def test_the_readme_s_verdict_table_says_what_the_shipped_results_compute():
    """README's "verdict here" column must stay true: each row starts with the verdict its shipped JSON computes."""
    import re
    from pathlib import Path

    from lora_core.research import record, verdicts

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| (held in direction but smaller|held|did not hold here)\b", readme, re.M))
    assert set(rows) == set(REPLAYS)
    for name, said in rows.items():
        result = record.shipped(name)
        assert result is not None, f"{name}: the README gives a verdict but results/replay/{name}.json is missing"
        assert verdicts.verdict(result)["verdict"] == said, name
