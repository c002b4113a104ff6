"""`python -m scripts.docs` regenerates every generated documentation file; `--check` only
compares them with what is committed and exits 1 naming the stale ones (CI and the sync
tests use the same `render_all`)."""

from __future__ import annotations

import argparse
import sys

from scripts.docs.collect import REPO, collect_all
from scripts.docs.render import render_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.docs")
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    args = parser.parse_args(argv)
    files = render_all(collect_all())
    stale = []
    for rel, text in sorted(files.items()):
        path = REPO / rel
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(rel)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if not args.check:
        # Examples of operations that no longer exist must not linger.
        for old in sorted((REPO / "docs" / "examples").glob("*.md")):
            if str(old.relative_to(REPO)) not in files:
                old.unlink()
                stale.append(str(old.relative_to(REPO)))
    verb = "stale" if args.check else "written"
    for rel in stale:
        print(f"{verb}: {rel}")
    if args.check and stale:
        print("run `uv run python -m scripts.docs` and commit the result", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
