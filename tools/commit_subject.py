"""commit-msg hook: the subject line is at most 72 characters; the detail goes in the body.

Long subjects are cut off by `git log --oneline`, GitHub and most mail readers, so the
part that says what the commit does must fit.
"""

from __future__ import annotations

import sys
from pathlib import Path

LIMIT = 72


def main(argv: list[str]) -> int:
    lines = Path(argv[1]).read_text().splitlines()
    subject = next((line for line in lines if line and not line.startswith("#")), "")
    if len(subject) <= LIMIT:
        return 0
    print(
        f"Commit subject is {len(subject)} characters (at most {LIMIT}): {subject!r}. "
        "Fix: shorten it and put the detail in the body, after a blank line.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
