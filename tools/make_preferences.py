"""Write the bundled preference set, src/flextrain/data/bundled/preferences.jsonl.

Two kinds of pair a small model can learn from, each with a reason to prefer one
answer that any reader can check: sums (the right total over an off-by-a-little
one) and requests for a short description (an answer over a refusal or a reply
that ignores the request). Seeded, so the file is the same on every run.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src/flextrain/data/bundled/preferences.jsonl"
THINGS = {
    "the soup": ["warm", "salty", "thick", "fragrant"],
    "the garden": ["green", "quiet", "overgrown", "bright"],
    "the train": ["late", "crowded", "fast", "clean"],
    "the market": ["busy", "noisy", "colourful", "cheap"],
    "the river": ["cold", "wide", "slow", "clear"],
    "the library": ["calm", "old", "large", "warm"],
    "the bread": ["fresh", "crusty", "soft", "sweet"],
    "the weather": ["windy", "mild", "grey", "sunny"],
}
REFUSALS = [
    "I cannot help with that.",
    "Describe it yourself.",
    "That is not something I will do.",
    "No.",
]
OFF_TOPIC = ["The capital of France is Paris.", "Seven is a prime number.", "Bananas are yellow."]


def rows(seed: int = 7) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out: list[dict[str, str]] = []
    for _ in range(160):
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        wrong = a + b + rng.choice([-3, -2, -1, 1, 2, 3])
        out.append(
            {
                "prompt": f"What is {a} + {b}?",
                "chosen": f"{a} + {b} = {a + b}.",
                "rejected": f"{a} + {b} = {wrong}.",
            }
        )
    for _ in range(160):
        thing = rng.choice(list(THINGS))
        first, second = rng.sample(THINGS[thing], 2)
        out.append(
            {
                "prompt": f"Describe {thing} in a few words.",
                "chosen": f"{thing.capitalize()} was {first} and {second}.",
                "rejected": rng.choice(REFUSALS + OFF_TOPIC),
            }
        )
    rng.shuffle(out)
    seen: set[str] = set()
    unique = []
    for row in out:
        key = json.dumps(row, sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


if __name__ == "__main__":
    data = rows()
    OUT.write_text("".join(json.dumps(r) + "\n" for r in data))
    print(f"wrote {len(data)} rows to {OUT}")
