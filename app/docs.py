"""Regenerate the README's generated tables: `python -m app.docs` (the tests check them)."""

from __future__ import annotations

import re
from pathlib import Path


def tables() -> dict[str, str]:
    # Importing the API registers every feature's error codes.
    import app.api.schema  # noqa: F401
    from app.config import ENVIRONMENT
    from app.errors import CODES

    return {
        "settings": "| variable | meaning |\n|---|---|\n"
        + "\n".join(f"| `{k}` | {v} |" for k, v in ENVIRONMENT.items()),
        # Alphabetical: the order codes register in depends on which modules a process
        # imported first.
        "codes": "| code | meaning |\n|---|---|\n" + "\n".join(f"| `{k}` | {v} |" for k, v in sorted(CODES.items())),
    }


def render(readme: str) -> str:
    for name, table in tables().items():
        def splice(m: re.Match[str], t: str = table) -> str:
            return m.group(1) + t + m.group(2)

        readme = re.sub(
            rf"(<!-- {name}:start -->\n).*?(\n<!-- {name}:end -->)",
            splice,
            readme,
            flags=re.DOTALL,
        )
    return readme


def main() -> None:
    path = Path("README.md")
    path.write_text(render(path.read_text()))


if __name__ == "__main__":
    main()
