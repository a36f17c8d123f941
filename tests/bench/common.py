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
    met: bool
    unit: str = "×"

    def cells(self) -> list[str]:
        shown = f"{self.value:.3g}{self.unit}" if self.unit == "×" else f"{self.value:.3g} {self.unit}"
        return [self.name, self.baseline, shown, self.target, "yes" if self.met else "NO"]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
