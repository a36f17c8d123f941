"""What every benchmark module returns: figures measured against a baseline of the same run."""

from __future__ import annotations

import resource
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    name: str
    baseline: str
    value: float
    target: str
    #: None for a figure shown for context (a bound of others), with no target of its own.
    met: bool | None
    unit: str = "×"

    def cells(self) -> list[str]:
        shown = f"{self.value:.3g}{self.unit}" if self.unit == "×" else f"{self.value:.3g} {self.unit}"
        return [self.name, self.baseline, shown, self.target, "-" if self.met is None else "yes" if self.met else "NO"]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
