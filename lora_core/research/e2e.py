"""An E2E-style data-to-text task, generated offline: a meaning representation in, one sentence or two out.

    task = make_task(seed=0)
    task.dataset.train[0]   # ("name[The Copper Kettle], eatType[pub], food[Italian], area[riverside]",
                            #  "The Copper Kettle is a pub by the riverside that serves Italian food.")
    task.references[0]      # every reference of test MR 0 (BLEU is scored against all of them)

The E2E NLG Challenge (Novikova et al. 2017, arXiv 1706.09254) is the task behind the LoRA paper's GPT-2 tables:
restaurant attributes (name, eatType, food, priceRange, customer rating, area, familyFriendly, near) rendered as
text, scored by BLEU against several human references per input. The real set cannot be downloaded here, so this
module builds one of the same shape: the same eight slots, our own venue names and values, and for each input
several phrasings drawn from varied templates (slot order, sentence split, wording). The test inputs use venue names
never seen in training, so a model must copy slots it has not memorised, and the several references make BLEU reward
any good phrasing, as in E2E.

Everything is drawn from one `random.Random(seed)`: the same seed gives the same task on every machine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..training.data import Dataset

_FIRST = ("Copper", "Golden", "Blue", "Silver", "Red", "Green", "Old", "Little", "Crooked", "Wandering",
          "Lucky", "Quiet", "Hidden", "Royal", "Salty", "Honey", "Iron", "Velvet", "Amber", "Maple")
_SECOND = ("Kettle", "Finch", "Lantern", "Anchor", "Oak", "Fox", "Harbour", "Spoon", "Mill", "Garden",
           "Crown", "Barrel", "Heron", "Bridge", "Orchard", "Compass", "Lark", "Teapot", "Wheel", "Otter")
EAT_TYPES = ("restaurant", "coffee shop", "pub")
FOODS = ("English", "French", "Italian", "Chinese", "Indian", "Japanese", "fast food")
PRICES = ("cheap", "moderate", "high", "less than £20", "£20-25", "more than £30")
RATINGS = ("low", "average", "high", "1 out of 5", "3 out of 5", "5 out of 5")
AREAS = ("city centre", "riverside")
SLOTS = ("name", "eatType", "food", "priceRange", "customer rating", "area", "familyFriendly", "near")


@dataclass(frozen=True)
class Task:
    """The generated task: prompt/completion pairs, and every reference of each test input."""

    dataset: Dataset                 # train: (MR, one reference); test: (MR, its first reference)
    references: list[list[str]]      # references[i]: all references of test input i


def venue_names(seed: int = 0) -> tuple[list[str], list[str]]:
    """400 venue names split 300 for training and 100 for testing (never shared), shuffled by `seed`."""
    names = [f"The {a} {b}" for a in _FIRST for b in _SECOND]
    random.Random(seed).shuffle(names)
    return names[:300], names[300:]


def meaning(rng: random.Random, names: list[str]) -> dict[str, str]:
    """One meaning representation: a name, an eatType, and 2 to 5 of the other slots."""
    mr = {"name": rng.choice(names), "eatType": rng.choice(EAT_TYPES)}
    optional = {"food": FOODS, "priceRange": PRICES, "customer rating": RATINGS, "area": AREAS,
                "familyFriendly": ("yes", "no"), "near": None}
    for slot in sorted(rng.sample(list(optional), rng.randint(2, 5)), key=SLOTS.index):
        if slot == "near":
            mr[slot] = rng.choice([n for n in names if n != mr["name"]])
        else:
            mr[slot] = rng.choice(optional[slot])
    return mr


def linearise(mr: dict[str, str]) -> str:
    """The input as E2E writes it: `slot[value]` pairs in the fixed slot order."""
    return ", ".join(f"{slot}[{mr[slot]}]" for slot in SLOTS if slot in mr)


def _price(value: str) -> str:
    return f"{value} prices" if value in ("cheap", "moderate", "high") else f"prices {value}"


def _rating(value: str, rng: random.Random) -> str:
    if "out of" in value:
        return rng.choice((f"a customer rating of {value}", f"a rating of {value}"))
    return rng.choice((f"a {value} customer rating", f"{value} ratings from customers"))


def _phrases(mr: dict[str, str], rng: random.Random) -> list[str]:
    """Noun or verb phrases for every slot but name and eatType, in a random order."""
    out = []
    if "food" in mr:
        food = mr["food"] if mr["food"] == "fast food" else f"{mr['food']} food"
        out.append(rng.choice((f"serves {food}", f"offers {food}", f"has {food} on the menu")))
    if "priceRange" in mr:
        out.append(rng.choice((f"has {_price(mr['priceRange'])}", f"is in the {mr['priceRange']} price range")))
    if "customer rating" in mr:
        out.append(rng.choice(("has ", "gets ")) + _rating(mr["customer rating"], rng))
    if "area" in mr:
        place = "in the city centre" if mr["area"] == "city centre" else "by the riverside"
        out.append(rng.choice((f"is {place}", f"is located {place}")))
    if "familyFriendly" in mr:
        yes = mr["familyFriendly"] == "yes"
        out.append(rng.choice(("is family-friendly", "welcomes families") if yes
                              else ("is not family-friendly", "does not welcome children")))
    if "near" in mr:
        out.append(rng.choice((f"is near {mr['near']}", f"can be found near {mr['near']}")))
    rng.shuffle(out)
    return out


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def realise(mr: dict[str, str], rng: random.Random) -> str:
    """One reference text for `mr`: a random opener, the slot phrases in a random order, one or two sentences."""
    name, kind = mr["name"], mr["eatType"]
    parts = _phrases(mr, rng)
    opener = rng.choice((f"{name} is a {kind} that", f"{name} is a {kind}. It", f"There is a {kind} called {name} that",
                         f"{name}, a {kind},"))
    if len(parts) > 2 and rng.random() < 0.5:  # two sentences
        cut = len(parts) // 2
        return f"{opener} {_join(parts[:cut])}. It {_join(parts[cut:])}."
    return f"{opener} {_join(parts)}."


def make_task(seed: int = 0, n_train: int = 2000, n_test: int = 200, n_references: int = 3) -> Task:
    """The generated task: `n_train` training pairs, `n_test` test inputs with `n_references` references each."""
    for field, value, low in (("n_train", n_train, 1), ("n_test", n_test, 1), ("n_references", n_references, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{field}={value!r} is not allowed: use an integer >= {low}")
    rng = random.Random(seed)
    train_names, test_names = venue_names(seed)
    train = []
    for _ in range(n_train):
        mr = meaning(rng, train_names)
        train.append((linearise(mr), realise(mr, rng)))
    test, references = [], []
    for _ in range(n_test):
        mr = meaning(rng, test_names)
        refs = list(dict.fromkeys(realise(mr, rng) for _ in range(4 * n_references)))[:n_references]
        test.append((linearise(mr), refs[0]))
        references.append(refs)
    return Task(Dataset("e2e-style", train, test), references)
