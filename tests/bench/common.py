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


class RssSampler:
    """The process's resident set sampled every `interval` seconds on a thread while the block
    runs: `start` and `peak` in MiB (ru_maxrss is a high-water mark of the whole process, which
    cannot tell one phase from an earlier one)."""

    def __init__(self, interval: float = 0.005) -> None:
        import threading

        self.interval = interval
        self.start = self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> float:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * resource.getpagesize() / (1024 * 1024)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.current())

    def __enter__(self) -> RssSampler:
        self.start = self.peak = self.current()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())
