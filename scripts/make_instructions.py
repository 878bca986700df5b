"""Generate the bundled instruction set `demo/instructions` from the bundled prose.

    python scripts/make_instructions.py          # writes data/bundled/instructions.jsonl
    python scripts/make_instructions.py --stats  # and prints token statistics (needs transformers)

Every row is an Alpaca-style record (instruction, input, output) built from a
passage of consecutive lines of `text.txt`, with an answer derived from the
passage by rule (its first sentence, the sentence after it, its long words, a
title from its first words, ...), so that a small model has something it can
learn. Passage lengths are drawn so that rendered examples spread from a few
dozen tokens to near 256 with the built-in decoder's tokenizer: the set exists
to show what padding costs (benchmarks/throughput.py), which needs many short
rows and a long tail. The output is a pure function of the seed and text.txt
(standard library only), so regenerating it gives the same file.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "src" / "flextrain" / "data" / "bundled"
SEED = 7
ROWS = 2000
# Instruction + input + output, in characters: at ~2.7 characters a token (long rows,
# measured) plus the chat template's 19 tokens this keeps every rendered row under 256.
MAX_CHARS = 640

NUMBER_WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve",
]  # fmt: skip
STOP = {"the", "a", "an", "in", "on", "at", "of", "and", "by", "for", "to", "with"}


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z']+", text)


def passage(lines: list[str], start: int, k: int) -> str:
    return " ".join(lines[start : start + k])


def title(text: str) -> str:
    chosen = [w for w in words(text) if w.lower() not in STOP][:3]
    return " ".join(w.capitalize() for w in chosen)


def long_words(text: str) -> str:
    seen: list[str] = []
    for word in words(text):
        low = word.lower()
        if len(low) >= 7 and low not in seen:
            seen.append(low)
    return ", ".join(seen) if seen else "There are none."


# A task: (weight, passage lines (low, high), phrasings, build(lines, start, k) -> (input, output)).
Build = Callable[[list[str], int, int], tuple[str, str] | None]


def _summary(lines: list[str], start: int, k: int) -> tuple[str, str]:
    return passage(lines, start, k), lines[start]


def _continue(lines: list[str], start: int, k: int) -> tuple[str, str] | None:
    if start + k >= len(lines):
        return None
    return passage(lines, start, k), lines[start + k]


def _plain(lines: list[str], start: int, k: int) -> tuple[str, str]:
    text = passage(lines, start, k)
    return text, " ".join(w.lower() for w in words(text))


def _long_words(lines: list[str], start: int, k: int) -> tuple[str, str]:
    text = passage(lines, start, k)
    return text, long_words(text)


def _title(lines: list[str], start: int, k: int) -> tuple[str, str]:
    text = passage(lines, start, k)
    return text, title(text)


def _count(lines: list[str], start: int, k: int) -> tuple[str, str]:
    return passage(lines, start, k), f"{NUMBER_WORDS[k].capitalize()}."


def _last_word(lines: list[str], start: int, k: int) -> tuple[str, str]:
    text = passage(lines, start, k)
    return text, words(text)[-1]


def _reverse(lines: list[str], start: int, k: int) -> tuple[str, str]:
    chosen = lines[start : start + k]
    return " ".join(chosen), " ".join(reversed(chosen))


def _first_word(lines: list[str], start: int, k: int) -> tuple[str, str]:
    return lines[start], words(lines[start])[0]


TASKS: list[tuple[float, tuple[int, int], list[str], Build]] = [
    (
        12,
        (2, 7),
        [
            "Summarise the passage in one sentence.",
            "Give a one-sentence summary of this text.",
        ],
        _summary,
    ),
    (12, (1, 7), ["Continue the text.", "Write the sentence that comes next."], _continue),
    (8, (1, 2), ["Rewrite this in lower case without punctuation."], _plain),
    (
        8,
        (1, 5),
        ["List the words of seven or more letters in the passage, in order."],
        _long_words,
    ),
    (12, (1, 6), ["Give a title for this passage.", "Suggest a short title for the text."], _title),
    (8, (1, 6), ["How many sentences are in the passage?"], _count),
    (8, (1, 4), ["What is the last word of the passage?"], _last_word),
    (8, (2, 4), ["Reverse the order of the sentences."], _reverse),
    (12, (1, 1), ["What is the first word of this sentence?"], _first_word),
]


def _capitals(rng: random.Random, lines: list[str]) -> dict[str, str]:
    word = rng.choice([w for w in words(rng.choice(lines)) if len(w) > 3]).lower()
    return {
        "instruction": f"Write '{word}' in capital letters.",
        "input": "",
        "output": word.upper(),
    }


def _letters(rng: random.Random, lines: list[str]) -> dict[str, str]:
    word = rng.choice([w for w in words(rng.choice(lines)) if "'" not in w]).lower()
    count = NUMBER_WORDS[len(word)] if len(word) < len(NUMBER_WORDS) else str(len(word))
    return {
        "instruction": f"How many letters are in the word '{word}'?",
        "input": "",
        "output": f"{count.capitalize()}.",
    }


def _alphabetical(rng: random.Random, lines: list[str]) -> dict[str, str]:
    chosen = list(dict.fromkeys(w.lower() for w in words(rng.choice(lines))))
    chosen = rng.sample(chosen, min(len(chosen), rng.randint(3, 5)))
    return {
        "instruction": "Put these words in alphabetical order.",
        "input": " ".join(chosen),
        "output": " ".join(sorted(chosen)),
    }


def _next_word(rng: random.Random, lines: list[str]) -> dict[str, str]:
    tokens = rng.choice(lines).split()
    cut = rng.randint(2, min(6, len(tokens) - 1))
    return {
        "instruction": "Finish the phrase with its next word.",
        "input": " ".join(tokens[:cut]),
        "output": tokens[cut].strip(".,;:!?"),
    }


# The shortest rows: a word or a phrase, no passage.
SHORT_TASKS: list[tuple[float, Callable[[random.Random, list[str]], dict[str, str]]]] = [
    (30, _capitals),
    (25, _letters),
    (30, _alphabetical),
    (30, _next_word),
]


def passage_length(rng: random.Random, low: int, high: int) -> int:
    """Short passages are common and long ones rare (weight k^-1.5), as in real data."""
    choices = list(range(low, high + 1))
    return rng.choices(choices, weights=[k**-1.5 for k in choices])[0]


def make_rows(lines: list[str], rows: int = ROWS, seed: int = SEED) -> list[dict[str, str]]:
    rng = random.Random(seed)
    weights = [t[0] for t in TASKS] + [t[0] for t in SHORT_TASKS]
    out: list[dict[str, str]] = []
    while len(out) < rows:
        pick = rng.choices(range(len(weights)), weights=weights)[0]
        if pick >= len(TASKS):
            out.append(SHORT_TASKS[pick - len(TASKS)][1](rng, lines))
            continue
        _, (low, high), phrasings, build = TASKS[pick]
        k = passage_length(rng, low, high)
        start = rng.randrange(len(lines) - k + 1)
        built = build(lines, start, k)
        if built is None:
            continue
        instruction = rng.choice(phrasings)
        source, answer = built
        if len(instruction) + len(source) + len(answer) > MAX_CHARS:
            continue
        out.append({"instruction": instruction, "input": source, "output": answer})
    return out


def token_stats(path: Path) -> dict[str, float]:
    """Lengths as flextrain prepares the rows for the built-in decoder (chat template)."""
    import tempfile

    from transformers import AutoTokenizer

    from flextrain.data.prepare import prepare_split
    from flextrain.models.builtin import TINY_LLAMA_ID, builtin_path

    with tempfile.TemporaryDirectory() as cache:
        folder = builtin_path(TINY_LLAMA_ID, Path(cache))
        tokenizer = AutoTokenizer.from_pretrained(folder)
        records = [json.loads(line) for line in path.read_text().splitlines() if line]
        dataset, _ = prepare_split(
            records, "instruction", tokenizer, 256, cache_dir=None, key=None, completion_only=True
        )
    lengths = sorted(len(ids) for ids in dataset["input_ids"])
    trained = sum(sum(1 for x in labels if x != -100) for labels in dataset["labels"])
    return {
        "rows": len(lengths),
        "real_tokens": sum(lengths),
        "label_tokens": trained,
        "min": lengths[0],
        "median": statistics.median(lengths),
        "p95": lengths[int(0.95 * (len(lengths) - 1))],
        "max": lengths[-1],
        "at_256": sum(1 for n in lengths if n >= 256),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=BUNDLED / "instructions.jsonl")
    parser.add_argument("--stats", action="store_true", help="print token statistics")
    args = parser.parse_args()
    lines = [ln for ln in (BUNDLED / "text.txt").read_text().splitlines() if ln.strip()]
    rows = make_rows(lines)
    args.out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    print(f"wrote {len(rows)} rows to {args.out}")
    if args.stats:
        print(json.dumps(token_stats(args.out)))


if __name__ == "__main__":
    main()
