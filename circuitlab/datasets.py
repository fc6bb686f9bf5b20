"""Chapter 6's prompt datasets: templates and fillers for `aligned_prompt_pairs`.

A filler is {"clean": {field: text}, "corrupt": {field: text}, "answers": [clean answer,
corrupt answer]}; every template is filled with every filler.

* The name task on circuitlab-2l, over prompts it never saw in training: the held-out
  name pairings in the held-out intro and query templates of its model card
  (circuitlab/data/circuitlab-2l.md; training/corpus.py generates the training data and
  keeps these out, and tests/test_ch06_story.py checks they are the same lists).
* Indirect object identification (Wang et al. 2022) for gpt2-small, and three more
  behaviours whose templates align on GPT-2's tokenizer, for the chapter's "Your turn".
"""

from __future__ import annotations

# ---------------------------------------------------------------- the name task, held out

HELDOUT_PEOPLE = [  # circuitlab-2l's held-out pairings, less the course prompt's four
    ("Emma", "Wilson"), ("John", "Taylor"), ("Mary", "Clark"), ("David", "Walker"), ("Anna", "Hall"),
    ("James", "Young"), ("Laura", "King"), ("Peter", "Scott"), ("Kate", "Green"), ("Daniel", "Baker"),
    ("Grace", "Nelson"), ("Ben", "Hill"),
]
HELDOUT_INTROS = ["Her friend was {first} {last}.", "We met {first} {last} in the park.", "The teacher was {first} {last}."]
HELDOUT_QUERIES = ["At lunch time {again}", "Later that evening {again}", "Everyone said hello to {again}"]
NAME_TEMPLATES = [f"{intro} {query}" for intro in HELDOUT_INTROS for query in HELDOUT_QUERIES]

# Every first name and surname circuitlab-2l was trained on (single GPT-2 tokens): the
# replacements an ABC corruption draws from.
FIRST_NAMES = [
    "Alex", "Sarah", "John", "Mary", "James", "Emma", "David", "Anna", "Michael", "Laura",
    "Tom", "Lucy", "Peter", "Kate", "Mark", "Jane", "Paul", "Emily", "Chris", "Grace",
    "Daniel", "Rachel", "Ben", "Amy", "Sam", "Alice", "Jack", "Helen", "Adam", "Claire",
]
SURNAMES = [
    "Hart", "Carroll", "Smith", "Brown", "Wilson", "Taylor", "Clark", "Walker", "Hall", "Allen",
    "Young", "King", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Hill", "Campbell",
    "Mitchell", "Roberts", "Carter", "Phillips", "Evans", "Turner", "Parker", "Collins", "Cook", "Morgan",
]
CORRUPTIONS = ("surname", "first_name", "second_name")  # chapter 1's, one name each


def name_fillers(corruption: str, people=HELDOUT_PEOPLE) -> list[dict]:
    """One filler per person, with one of chapter 1's corruptions: the other name comes from
    the next person in the list. Answers: the person's surname, then the other surname."""
    if corruption not in CORRUPTIONS:
        raise ValueError(f"corruption must be one of {CORRUPTIONS}, not {corruption!r}")
    out = []
    for i, (first, last) in enumerate(people):
        other_first, other_last = people[(i + 1) % len(people)]
        corrupt = {"surname": {"first": first, "last": other_last, "again": first},
                   "first_name": {"first": other_first, "last": last, "again": first},
                   "second_name": {"first": first, "last": last, "again": other_first}}[corruption]
        out.append({"clean": {"first": first, "last": last, "again": first}, "corrupt": corrupt,
                    "answers": [f" {last}", f" {other_last}"]})
    return out


def abc_candidates(i: int) -> dict[str, list[str]]:
    """Replacement names for person i's ABC corruption: each list starts at another place,
    so the dataset's corrupt prompts do not all use the same three names."""

    def turn(names: list[str], by: int) -> list[str]:
        by %= len(names)
        return names[by:] + names[:by]

    return {"first": turn(FIRST_NAMES, 3 * i + 1), "last": turn(SURNAMES, 3 * i + 1),
            "again": turn(FIRST_NAMES, 3 * i + 6)}


# ---------------------------------------------------------------- Your turn: gpt2-small

# Indirect object identification: "When Mary and John went to the store, John gave a drink
# to" -> " Mary". The clean prompt repeats the subject (S); the answer is the other name
# (the indirect object, IO). Fields: io, s (the subject's first mention), s2 (its second).
IOI_TEMPLATES = [
    "When {io} and {s} went to the store, {s2} gave a drink to",
    "When {io} and {s} went to the park, {s2} gave a ball to",
    "After {io} and {s} went to the office, {s2} gave a book to",
    "While {io} and {s} were at the party, {s2} gave a gift to",
]
IOI_NAMES = [("Mary", "John"), ("Alice", "Bob"), ("Sarah", "James"), ("Emma", "David"), ("Anna", "Paul"),
             ("Kate", "Tom"), ("Lucy", "Mark"), ("Jane", "Peter")]


def ioi_fillers(names=IOI_NAMES) -> list[dict]:
    """Clean: IO and S, S repeated; answers (IO, S). The corrupt prompt is filled in by an
    ABC corruption in the chapter (every name replaced by another)."""
    out = []
    for io, s in names:
        for a, b in ((io, s), (s, io)):  # both orders, so position alone never gives the answer away
            out.append({"clean": {"io": a, "s": b, "s2": b}, "answers": [f" {a}", f" {b}"]})
    return out


# Three more behaviours, each a template (or two) and fillers that align on GPT-2's
# tokenizer: a corrupt filling changes one word, and the answers are single tokens.
BEHAVIOURS = {
    "gendered pronoun": {
        "templates": ["Yesterday {name} went to the shop because", "Today {name} was late for work because"],
        "fillers": [{"clean": {"name": a}, "corrupt": {"name": b}, "answers": [" he", " she"]}
                    for a, b in [("John", "Mary"), ("David", "Sarah"), ("James", "Emma"), ("Tom", "Anna"),
                                 ("Paul", "Kate"), ("Mark", "Lucy")]],
    },
    "subject-verb agreement": {
        "templates": ["The {noun} near the old {other}", "The {noun} behind the small {other}"],
        "fillers": [{"clean": {"noun": one, "other": other_many}, "corrupt": {"noun": many, "other": other_many},
                     "answers": [" is", " are"]}
                    for one, many, other_many in [("key", "keys", "cabinets"), ("dog", "dogs", "houses"),
                                                  ("book", "books", "tables"), ("car", "cars", "trees"),
                                                  ("girl", "girls", "doors"), ("boy", "boys", "windows")]],
    },
    "country to capital": {
        "templates": ["The capital of {country} is the city of"],
        "fillers": [{"clean": {"country": c1}, "corrupt": {"country": c2}, "answers": [f" {a1}", f" {a2}"]}
                    for (c1, a1), (c2, a2) in [(("France", "Paris"), ("Italy", "Rome")),
                                               (("Germany", "Berlin"), ("Spain", "Madrid")),
                                               (("Italy", "Rome"), ("France", "Paris")),
                                               (("Spain", "Madrid"), ("Germany", "Berlin")),
                                               (("Japan", "Tokyo"), ("Russia", "Moscow")),
                                               (("Russia", "Moscow"), ("Japan", "Tokyo"))]],
    },
}
