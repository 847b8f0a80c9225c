"""Rich progress bars with ETA for training, or silence (tests, non-main DDP ranks)."""

from __future__ import annotations

from types import TracebackType
from typing import Any


class TrainProgress:
    """An epochs bar and a per-epoch steps bar, both with elapsed time and ETA.

    Disabled, every method is a no-op, so the loop never branches on whether it is shown.
    """

    def __init__(self, enabled: bool, total_epochs: int, first_epoch: int) -> None:
        self._progress: Any = None
        self._epochs: Any = None
        self._steps: Any = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description:>6}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
        )
        self._epochs = self._progress.add_task(
            "epochs", total=total_epochs, completed=first_epoch, status=""
        )

    def __enter__(self) -> TrainProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start_epoch(self, epoch: int, steps: int) -> None:
        """Show a fresh steps bar for (0-based) ``epoch``."""
        if self._progress is None:
            return
        if self._steps is not None:
            self._progress.remove_task(self._steps)
        self._steps = self._progress.add_task(f"ep {epoch + 1}", total=steps, status="")

    def step(self, loss: float) -> None:
        """One optimizer step done."""
        if self._progress is not None and self._steps is not None:
            self._progress.update(self._steps, advance=1, status=f"loss {loss:.4f}")

    def end_epoch(self, summary: str) -> None:
        """Advance the epochs bar and print ``summary`` above the bars."""
        if self._progress is not None:
            self._progress.update(self._epochs, advance=1, status=summary)
            self._progress.console.log(summary)

    def note(self, text: str) -> None:
        """Show ``text`` on the epochs bar (e.g. while validating)."""
        if self._progress is not None:
            self._progress.update(self._epochs, status=text)
