"""RULER-style synthetic long-context tasks (Hsieh et al. 2024), generated offline.

Written from ../shared/spec/benchmarks.md section 2 for the v2 paper's "new-knowledge storage"
evaluation at small scale (v2_paper.md sections 3.2 and 5): facts appear only in the prompt, and
a model must store and retrieve them, at 1x to 8x its training context. Tasks:

* ``niah_single``: one needle "One of the special magic numbers for {key} is: {value}." (a
  "word-word" key, a 7-digit value) at a random sentence boundary of the noise haystack.
* ``niah_multikey``: the haystack is made of distractor needles with other keys (RULER's
  niah_multikey_2).
* ``niah_multivalue``: four needles give four values to the queried key.
* ``niah_multiquery``: four keys with one value each, all queried.
* ``vt``: variable tracking, a chain ``VAR A = 12345``, ``VAR B = VAR A``, ... (4 hops) in
  the noise haystack; the answer is the 5 names. No one-shot demonstration (it would take half
  of a short context; the format is learned in training).
* ``cwe``: common words in a numbered list. RULER's counts (10 words x 30, the others x 3)
  need thousands of tokens; here 3 words x 4 against the others x 1, at every length (past
  the ~2,900 words of the list, the extra distractors are "word-word" pairs).
* ``fwe``: frequent "coded words" (6 random letters) with Zipf counts, alpha = 2, the rank-1
  word replaced by "..." as noise; the answer is ranks 2-4. Every rank with a nonzero count
  is used, and ranks 1-5 are made strictly decreasing so that the answer is unambiguous.
* ``qa``: unrelated synthetic documents ("Document i:") of facts about one person each; the
  question asks one fact of one document (the real RULER QA needs SQuAD/HotpotQA, not stored).

Every prompt ends with an answer prefix that names the query ("The special magic numbers for
{key} mentioned in the provided text are", "Answer:"), so a model continues with the answer;
RULER's separate question line is left out of the non-QA tasks, as it would repeat the prefix
in contexts of a few hundred tokens. The facts asked about are drawn before the filler, so
sample i of a task asks the same thing at every length.

Sizing follows RULER: a task has filler units (noise sentences, distractor needles, list
words, coded words, documents) and the largest number of units whose prompt plus the answer
budget fits the target length is found by binary search. Every sample is a pure function of
(task, seed, units), so the search only rebuilds it. Keys, list words and surnames come from
the TinyStories slice shipped with the package; nothing is downloaded.

Training documents are samples with their answers, sized in words (the tokenizer is trained on
them afterwards) to 1/4-3/4 of the training context with measured tokens-per-word ratios.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import re
import string
from typing import Callable, Sequence

import ml_collections
import numpy as np

from mosaics_jax.data import corpus
from mosaics_jax.data.corpus import DataError
from mosaics_jax.data.text_data import documents_data

TASKS = ("niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery", "vt", "cwe",
         "fwe", "qa")
# Generation budgets in tokens (RULER's are 32-128 for 7B-model tokenizers and chatty
# answers); two values only, so an evaluation compiles one decoding program per budget.
ANSWER_TOKENS = {"niah_single": 16, "niah_multikey": 16, "niah_multivalue": 48,
                 "niah_multiquery": 48, "vt": 48, "cwe": 16, "fwe": 16, "qa": 16}
# Tokens per whitespace-separated word of a training document, per task: the 95th percentile
# on ``ruler_v2.py:cpu`` documents with their 2048-piece tokenizer, rounded up. A larger
# vocabulary gives fewer tokens, so documents only get shorter (at 8192 pieces and context
# 4096: 0.12-0.6 of the context instead of 0.2-0.85).
TOKENS_PER_WORD = {"niah_single": 1.6, "niah_multikey": 2.2, "niah_multivalue": 2.2,
                   "niah_multiquery": 2.4, "vt": 3.0, "cwe": 2.4, "fwe": 4.0, "qa": 2.5}
WORD_SOURCE = "package:tinystories/train.txt"
NOISE = ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
         "There and back again.")
MAX_UNITS = 1 << 22  # a length function that ignores the filler would search forever
_TRAIN, _VALIDATION, _EVALUATION = 0, 1, 2

FIRST_NAMES = ("Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Henry", "Ida",
               "Jack", "Kate", "Leo", "Mia", "Noah", "Olga", "Paul", "Rosa", "Sam", "Tina",
               "Victor", "Wendy", "Yuri", "Zoe", "Omar", "Lucy", "Max", "Nina", "Oscar")
CITIES = ("Paris", "London", "Tokyo", "Cairo", "Lima", "Oslo", "Rome", "Madrid", "Berlin",
          "Dublin", "Vienna", "Prague", "Lisbon", "Athens", "Seoul", "Delhi", "Nairobi", "Quito")
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "black",
           "white", "grey", "gold")
JOBS = ("baker", "farmer", "teacher", "doctor", "painter", "pilot", "sailor", "nurse",
        "tailor", "builder", "driver", "singer", "dancer", "writer", "cook", "gardener")
PETS = ("cat", "dog", "rabbit", "parrot", "turtle", "hamster", "goldfish", "horse", "snake",
        "frog", "mouse", "pony")
FOODS = ("apples", "bread", "cheese", "rice", "soup", "cake", "noodles", "pears", "carrots",
         "cookies", "pizza", "beans")
AGES = tuple(str(age) for age in range(6, 90))
# attribute: (statement, question, values)
FACTS = {
    "city": ("{name} lives in {value}.", "Where does {name} live?", CITIES),
    "colour": ("{name}'s favourite colour is {value}.", "What is {name}'s favourite colour?",
               COLOURS),
    "job": ("{name} works as a {value}.", "What does {name} work as?", JOBS),
    "pet": ("{name} has a pet {value}.", "What pet does {name} have?", PETS),
    "food": ("{name} likes to eat {value}.", "What does {name} like to eat?", FOODS),
    "age": ("{name} is {value} years old.", "How old is {name}?", AGES),
}
FACTS_PER_DOCUMENT = 3
CWE_COMMON_WORDS, CWE_COMMON_REPEATS = 3, 4
FWE_ALPHA, ZETA_OF_ALPHA = 2.0, math.pi ** 2 / 6
VT_HOPS = 4


@dataclasses.dataclass(frozen=True)
class Sample:
  """A prompt ending with its answer prefix, and the reference answers a model must write."""

  prompt: str
  answers: tuple[str, ...]
  task: str


@functools.lru_cache(maxsize=1)
def words() -> tuple[str, ...]:
  """Lower-case words of 3-10 letters seen at least twice in the shipped TinyStories slice."""
  counts = collections.Counter(word for document in corpus.read_documents(WORD_SOURCE)
                               for word in re.findall(r"\b[a-z]{3,10}\b", document))
  return tuple(sorted(word for word, count in counts.items() if count >= 2))


def _pairs(rng: np.random.Generator, count: int) -> list[str]:
  """``count`` distinct "word-word" strings (RULER's keys are adjective-noun pairs)."""
  vocabulary = words()
  picks = rng.choice(len(vocabulary) ** 2, size=count, replace=False)
  return [f"{vocabulary[i // len(vocabulary)]}-{vocabulary[i % len(vocabulary)]}"
          for i in picks.tolist()]


def _distinct_words(rng: np.random.Generator, count: int) -> list[str]:
  """``count`` distinct words: single words while the list lasts, then pairs."""
  vocabulary = words()
  singles = rng.choice(len(vocabulary), size=min(count, len(vocabulary)), replace=False)
  return [vocabulary[i] for i in singles] + _pairs(rng, max(count - len(vocabulary), 0))


def _numbers(rng: np.random.Generator, count: int, digits: int) -> list[str]:
  low = 10 ** (digits - 1)
  return [str(low + n) for n in rng.choice(9 * low, size=count, replace=False).tolist()]


def _letter_strings(rng: np.random.Generator, count: int, length: int,
                    letters: str) -> list[str]:
  """``count`` distinct random strings (variable names, coded words)."""
  found: dict[str, None] = {}
  while len(found) < count:
    codes = rng.integers(0, len(letters), size=(count - len(found), length))
    found.update(dict.fromkeys("".join(letters[c] for c in row) for row in codes))
  return list(found)


def _insert(depths: np.ndarray, filler: list[str], inserts: list[str]) -> list[str]:
  """The filler with ``inserts`` placed, in order, at the boundaries nearest the relative
  ``depths`` (fractions in [0, 1], sorted here)."""
  positions = np.round(np.sort(depths) * len(filler)).astype(int)
  out = list(filler)
  for offset, (position, item) in enumerate(zip(positions.tolist(), inserts)):
    out.insert(position + offset, item)
  return out


def _noise(units: int) -> list[str]:
  return [NOISE[i % len(NOISE)] for i in range(units)]


def _needle(key: str, value: str) -> str:
  return f"One of the special magic numbers for {key} is: {value}."


def _niah_prompt(haystack: str, query: str) -> str:
  return (f"Remember the special magic numbers in this text.\n{haystack}\n"
          f"The special magic numbers for {query} mentioned in the provided text are")


def _join_keys(keys: Sequence[str]) -> str:
  return ", ".join(keys[:-1]) + " and " + keys[-1] if len(keys) > 1 else keys[0]


def _niah(rng: np.random.Generator, units: int, *, keys: int, values: int) -> tuple[str, tuple]:
  """Noise haystack with ``keys`` x ``values`` needles, every key queried."""
  names = _pairs(rng, keys)
  numbers = _numbers(rng, keys * values, 7)
  needles = [_needle(names[i // values], numbers[i]) for i in range(keys * values)]
  depths = rng.random(len(needles))
  order = rng.permutation(len(needles))  # which needle goes at which (sorted) depth
  haystack = _insert(depths, _noise(units), [needles[i] for i in order])
  return _niah_prompt(" ".join(haystack), _join_keys(names)), tuple(numbers)


def niah_single(rng, units):
  return _niah(rng, units, keys=1, values=1)


def niah_multivalue(rng, units):
  return _niah(rng, units, keys=1, values=4)


def niah_multiquery(rng, units):
  return _niah(rng, units, keys=4, values=1)


def niah_multikey(rng: np.random.Generator, units: int) -> tuple[str, tuple]:
  """Every filler line is a needle with another key; one key is queried."""
  key, value, depth = _pairs(rng, 1)[0], _numbers(rng, 1, 7)[0], rng.random(1)
  others = [k for k in _pairs(rng, units + 1) if k != key][:units]
  distractors = [_needle(k, v) for k, v in zip(others, _numbers(rng, units, 7))]
  lines = _insert(depth, distractors, [_needle(key, value)])
  return _niah_prompt("\n".join(lines), key), (value,)


def vt(rng: np.random.Generator, units: int) -> tuple[str, tuple]:
  """A chain of VT_HOPS + 1 variables holding one 5-digit value, in order, in noise."""
  names = _letter_strings(rng, VT_HOPS + 1, 5, string.ascii_uppercase)
  value = _numbers(rng, 1, 5)[0]
  chain = [f"VAR {names[0]} = {value}."] + [f"VAR {names[i]} = VAR {names[i - 1]}."
                                            for i in range(1, len(names))]
  haystack = " ".join(_insert(rng.random(len(chain)), _noise(units), chain))
  prompt = (f"Track the variable assignments in this text.\n{haystack}\n"
            f"Answer: the variables assigned the value {value} are")
  return prompt, tuple(names)


def cwe(rng: np.random.Generator, units: int) -> tuple[str, tuple]:
  """A numbered list: CWE_COMMON_WORDS words CWE_COMMON_REPEATS times, ``units`` others once."""
  common = _distinct_words(rng, CWE_COMMON_WORDS)
  others = [w for w in _distinct_words(rng, units + CWE_COMMON_WORDS) if w not in common][:units]
  items = [w for w in common for _ in range(CWE_COMMON_REPEATS)] + others
  items = [items[i] for i in rng.permutation(len(items))]
  listing = " ".join(f"{i}. {word}" for i, word in enumerate(items, 1))
  prompt = (f"Count the words of this list.\n{listing}\n"
            f"Answer: the {CWE_COMMON_WORDS} most common words in the list are")
  return prompt, tuple(common)


def zipf_counts(units: int) -> list[int]:
  """Occurrences of the coded words by rank: floor(n k^-alpha / zeta(alpha)) for n = units,
  every rank with a nonzero count (at least 6 ranks), ranks 1-5 strictly decreasing."""
  ranks = max(6, int((units / ZETA_OF_ALPHA) ** (1 / FWE_ALPHA)))
  counts = [max(int(units * k ** -FWE_ALPHA / ZETA_OF_ALPHA), 1) for k in range(1, ranks + 1)]
  for k in range(3, -1, -1):  # ranks 4 .. 1 above the next
    counts[k] = max(counts[k], counts[k + 1] + 1)
  return counts


def fwe(rng: np.random.Generator, units: int) -> tuple[str, tuple]:
  """Coded words with Zipf counts (``units`` = n), the most frequent one replaced by "..."."""
  counts = zipf_counts(units)
  answers = _letter_strings(rng, 3, 6, string.ascii_lowercase)
  others = [w for w in _letter_strings(rng, len(counts), 6, string.ascii_lowercase)
            if w not in answers][:len(counts) - 4]
  items = [word for word, count in zip(["...", *answers, *others], counts)
           for _ in range(count)]
  text = " ".join(items[i] for i in rng.permutation(len(items)))
  prompt = (f"Count the coded words of this text.\n{text}\n"
            "Answer: the three most frequent coded words are")
  return prompt, tuple(answers)


def _people(rng: np.random.Generator, count: int) -> list[str]:
  """``count`` distinct "First Surname" names (surnames from the word list)."""
  firsts = rng.integers(0, len(FIRST_NAMES), size=count).tolist()
  return [f"{FIRST_NAMES[f]} {w.capitalize()}" for f, w in zip(firsts,
                                                               _distinct_words(rng, count))]


def _facts(rng: np.random.Generator, person: str) -> tuple[str, list[tuple[str, str]]]:
  """A document of FACTS_PER_DOCUMENT facts about ``person``, and the (attribute, value)s."""
  attributes = [list(FACTS)[i] for i in rng.choice(len(FACTS), FACTS_PER_DOCUMENT,
                                                   replace=False)]
  facts = [(a, FACTS[a][2][int(rng.integers(len(FACTS[a][2])))]) for a in attributes]
  return " ".join(FACTS[a][0].format(name=person, value=v) for a, v in facts), facts


def qa(rng: np.random.Generator, units: int) -> tuple[str, tuple]:
  """``units`` + 1 documents about different people; one fact of one document is asked."""
  person, depth = _people(rng, 1)[0], rng.random(1)
  gold, facts = _facts(rng, person)
  attribute, answer = facts[int(rng.integers(len(facts)))]
  others = [p for p in _people(rng, units + 1) if p != person][:units]
  documents = _insert(depth, [_facts(rng, p)[0] for p in others], [gold])
  prompt = ("Answer the question from these documents.\n\n" + "\n\n".join(
      f"Document {i}:\n{d}" for i, d in enumerate(documents, 1)) +
            f"\n\nQuestion: {FACTS[attribute][1].format(name=person)}\nAnswer:")
  return prompt, (answer,)


BUILDERS: dict[str, Callable[[np.random.Generator, int], tuple[str, tuple]]] = {
    "niah_single": niah_single, "niah_multikey": niah_multikey,
    "niah_multivalue": niah_multivalue, "niah_multiquery": niah_multiquery, "vt": vt,
    "cwe": cwe, "fwe": fwe, "qa": qa}


def check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
  unknown = [t for t in tasks if t not in TASKS]
  if unknown or not tasks:
    raise DataError(f"Unknown RULER tasks {unknown or 'none given'}; choose from {TASKS}.")
  return tuple(tasks)


def build_sample(task: str, seed: Sequence[int] | int, units: int) -> Sample:
  """The sample of ``task`` drawn from ``seed`` with ``units`` filler units."""
  prompt, answers = BUILDERS[task](np.random.default_rng(seed), units)
  return Sample(prompt, answers, task)


def answer_text(sample: Sample) -> str:
  """The continuation a model learns to write after the prompt (then the end of text)."""
  return " " + ", ".join(sample.answers) + "."


def document(sample: Sample) -> str:
  return sample.prompt + answer_text(sample)


def largest_fitting(build: Callable[[int], Sample], fits: Callable[[Sample], bool]) -> int | None:
  """The largest number of filler units whose sample fits (doubling, then bisection, as
  RULER's haystack search); None when even the sample without filler does not."""
  if not fits(build(0)):
    return None
  low, high = 0, 1
  while fits(build(high)):
    low, high = high, 2 * high
    if high > MAX_UNITS:
      raise DataError(f"More than {MAX_UNITS:,} filler units still fit: is the length function "
                      "measuring the prompt?")
  while high - low > 1:  # build(low) fits, build(high) does not
    middle = (low + high) // 2
    low, high = (middle, high) if fits(build(middle)) else (low, middle)
  return low


def evaluation_samples(task: str, count: int, target_tokens: int,
                       length_of: Callable[[str], int], seed: int = 42) -> list[Sample]:
  """``count`` samples whose prompt plus ANSWER_TOKENS[task] fills ``target_tokens`` as
  measured by ``length_of`` (the evaluated model's tokenizer). Sample i has the same keys
  and values at every length, so lengths differ only by the filler."""
  check_tasks([task])
  budget = ANSWER_TOKENS[task]
  samples = []
  for index in range(count):
    build = functools.partial(build_sample, task, (seed, _EVALUATION, TASKS.index(task), index))
    units = largest_fitting(build, lambda s: length_of(s.prompt) + budget <= target_tokens)
    if units is None:
      raise DataError(f"{task} does not fit in {target_tokens} tokens: its prompt without "
                      f"filler takes {length_of(build(0).prompt)} tokens plus {budget} for the "
                      "answer; evaluate at a longer length.")
    samples.append(build(units))
  return samples


def estimated_tokens(text: str, task: str) -> int:
  return math.ceil(len(text.split()) * TOKENS_PER_WORD[task])


def training_documents(count: int, context_tokens: int, tasks: Sequence[str], seed: int,
                       validation: bool = False) -> list[str]:
  """``count`` documents (prompt and answer) of tasks drawn uniformly, each sized to a
  uniform 1/4-3/4 of ``context_tokens`` in estimated tokens, so that most fit a training
  window whole. Training and validation documents come from disjoint streams."""
  tasks = check_tasks(tasks)
  split = _VALIDATION if validation else _TRAIN
  documents = []
  for index in range(count):
    rng = np.random.default_rng((seed, split, index))
    task = tasks[int(rng.integers(len(tasks)))]
    build = functools.partial(build_sample, task, (seed, split, index, 1))
    smallest = estimated_tokens(document(build(0)), task)
    if smallest > 3 * context_tokens // 4:
      raise DataError(f"{task} needs about {smallest} tokens without filler, more than 3/4 of "
                      f"the {context_tokens}-token training context: use a longer seq_len or "
                      "leave it out of config.data.ruler.tasks.")
    target = rng.uniform(max(context_tokens / 4, smallest), 3 * context_tokens / 4)
    units = largest_fitting(build, lambda s: estimated_tokens(document(s), task) <= target)
    documents.append(document(build(units)))
  return documents


def _found(prediction: str, reference: str) -> bool:
  return reference.strip().lower() in prediction.strip().lower()


def string_match_all(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
  """RULER's score for NIAH, vt, cwe, fwe: the fraction of each sample's reference items found
  in its prediction (case-insensitive substrings), averaged over samples, x 100."""
  return 100.0 * float(np.mean([np.mean([_found(p, r) for r in refs])
                                for p, refs in zip(predictions, references, strict=True)]))


def string_match_part(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
  """RULER's score for QA: 1 when any reference answer is found in the prediction, averaged
  over samples, x 100."""
  return 100.0 * float(np.mean([any(_found(p, r) for r in refs)
                                for p, refs in zip(predictions, references, strict=True)]))


METRICS = {task: string_match_part if task == "qa" else string_match_all for task in TASKS}


def score(task: str, predictions: Sequence[str], samples: Sequence[Sample]) -> float:
  return METRICS[task](predictions, [s.answers for s in samples])


def config_section(**overrides) -> ml_collections.ConfigDict:
  """The ``config.data.ruler`` section of an experiment: which tasks, how many documents, and
  the generator's seed (separate from ``config.seed``, which orders the training windows)."""
  section = ml_collections.ConfigDict(dict(
      tasks=",".join(TASKS), train_documents=20_000, validation_documents=200, seed=0))
  section.update(overrides)
  return section


def ruler_data(config, *, seed: int, workdir: str, process_index: int = 0,
               process_count: int = 1):
  """The ``ruler`` data source: generated training and validation documents, tokenized and
  packed by ``documents_data`` (config: the ``data`` section, with a ``ruler`` sub-section)."""
  if "ruler" not in config:
    raise DataError("config.data.source='ruler' needs a config.data.ruler section: add "
                    "config.data.ruler = mosaics_jax.data.ruler.config_section() before locking.")
  settings = config.ruler
  tasks = check_tasks([t.strip() for t in settings.tasks.split(",") if t.strip()])
  train = training_documents(settings.train_documents, config.seq_len, tasks, settings.seed)
  validation = training_documents(settings.validation_documents, config.seq_len, tasks,
                                  settings.seed, validation=True)
  data = documents_data(train, validation, config, seed=seed, workdir=workdir,
                        process_index=process_index, process_count=process_count,
                        description=f"RULER-style tasks ({', '.join(tasks)})")
  lengths = np.asarray([len(ids) for ids in data.tokenizer.encode(validation)])
  data.description += (f"; validation documents of {lengths.min()}-{lengths.max()} tokens "
                       f"(median {int(np.median(lengths))}) for a {config.seq_len}-token context")
  return data
