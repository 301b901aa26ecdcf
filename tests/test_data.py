"""The shipped datasets and the validation of uploaded JSON Lines files."""

import json
import re

import pytest

from lora_core.training.data import DATA_DIR, Dataset, general_english, load_dataset, load_jsonl
from lora_core.training.datasets import make_datasets


def _parse(prompt: str) -> tuple[str, str]:
    """(template, interest) of a prompt, found by matching it against the eight templates."""
    for template in make_datasets.PROMPT_TEMPLATES:
        m = re.fullmatch(re.escape(template).replace(re.escape("{t}"), "(.+)"), prompt)
        if m:
            return template, m.group(1)
    raise AssertionError(f"prompt {prompt!r} matches no template")


def _interest(prompt: str) -> str:
    return _parse(prompt)[1]


def test_recommendations_has_at_least_200_pairs_in_two_splits():
    ds = load_dataset("recommendations")
    assert len(ds.train) + len(ds.test) >= 200
    assert len(ds.train) >= 150 and len(ds.test) >= 40


def test_heldout_interests_never_occur_in_training():
    ds = load_dataset("recommendations")
    train_interests = {_interest(p) for p, _ in ds.train}
    test_interests = {_interest(p) for p, _ in ds.test}
    assert train_interests.isdisjoint(test_interests)
    assert test_interests == set(make_datasets.TEST_INTERESTS)
    # not even as a word inside a training prompt ("vegan cooking" vs "cooking" would leak)
    for interest in test_interests:
        assert not any(re.search(rf"\b{re.escape(interest)}\b", p) for p, _ in ds.train), interest
    assert {c for _, c in ds.train}.isdisjoint({c for _, c in ds.test})


def test_pairs_are_varied_and_follow_the_seed_format():
    ds = load_dataset("recommendations")
    pairs = ds.train + ds.test
    assert len({p for p, _ in pairs}) == len(pairs)          # no prompt repeats
    assert len({_interest(p) for p, _ in pairs}) >= 40        # many interests
    templates_used = {_parse(p)[0] for p, _ in pairs}
    assert len(templates_used) == len(make_datasets.PROMPT_TEMPLATES)
    assert all(re.fullmatch(r"I recommend '.+'", c) for _, c in pairs)
    assert ("User likes cooking videos.", "I recommend 'Pasta Tutorial'") in ds.train


def test_shipped_files_are_the_generators_output():
    train, test = make_datasets.build()
    for name, rows in (("train", train), ("test", test)):
        lines = (DATA_DIR / f"recommendations.{name}.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == rows


def test_general_english_is_a_few_paragraphs():
    text = general_english()
    assert text.count("\n\n") >= 3 and len(text.split()) > 300


def test_load_dataset_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"dataset='nope'.*recommendations"):
        load_dataset("nope")


def test_load_dataset_splits_a_jsonl_file(tmp_path):
    rows = [{"prompt": f"User likes topic {i} videos.", "completion": f"I recommend 'Video {i}'"} for i in range(20)]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    ds = load_dataset(str(path))
    assert ds.name == "mine" and len(ds.train) == 18 and len(ds.test) == 2
    assert set(ds.train).isdisjoint(ds.test)
    assert load_dataset(str(path)) == ds  # seeded: the same split every time


def test_from_pairs_keeps_one_pair_for_training_and_checks_fraction():
    assert Dataset.from_pairs([("a", "b")], test_fraction=0.5).train == [("a", "b")]
    with pytest.raises(ValueError, match=r"test_fraction=1.0"):
        Dataset.from_pairs([("a", "b")], test_fraction=1.0)
    with pytest.raises(ValueError, match="split='dev'"):
        load_dataset("recommendations").split("dev")


# --- upload validation ---------------------------------------------------------------------------
def test_upload_accepts_bytes_with_bom_blank_lines_and_extra_fields():
    raw = '\ufeff{"prompt": " P1 ", "completion": "C1", "id": 7}\n\n{"prompt": "P2", "completion": "C2"}\n'
    assert load_jsonl(raw.encode("utf-8")) == [("P1", "C1"), ("P2", "C2")]


@pytest.mark.parametrize("raw, message", [
    (b"", "is empty"),
    (b"  \n\n ", "is empty"),
    (b'{"prompt": "caf\xe9", "completion": "x"}', "not UTF-8.*offset 15"),
    (b'{"prompt": "a", "completion": "b"}\n{"prompt": ', "line 2 is not valid JSON"),
    (b'["prompt", "completion"]', "line 1 is a list"),
    (b'{"prompt": "a"}', r"line 1: field 'completion' is missing \(the line has keys \['prompt'\]\)"),
    (b'{"prompt": "", "completion": "b"}', "line 1: field 'prompt' is ''"),
    (b'{"prompt": 3, "completion": "b"}', "field 'prompt' is 3"),
    (('{"prompt": "a", "completion": "' + "x" * 2001 + '"}').encode(), "2001 characters"),
], ids=["empty", "only-whitespace", "latin-1", "truncated-json", "a-list", "no-completion", "empty-prompt",
        "prompt-a-number", "completion-too-long"])
def test_upload_rejects_bad_files_with_a_clear_message(raw, message):
    with pytest.raises(ValueError, match=message):
        load_jsonl(raw)


def test_upload_rejects_too_many_rows():
    raw = b'{"prompt": "a", "completion": "b"}\n' * 4
    assert len(load_jsonl(raw, max_rows=4)) == 4
    with pytest.raises(ValueError, match="4 rows: at most max_rows=3"):
        load_jsonl(raw, max_rows=3)


def test_upload_path_must_be_a_file(tmp_path):
    with pytest.raises(ValueError, match="is not a file"):
        load_jsonl(tmp_path / "missing.jsonl")
