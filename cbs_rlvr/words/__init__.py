"""The words layer: every number format and every sentence a reader sees. Numbers with their units,
intervals, durations, percentages and column headers (`numbers`); the sentences that state a
result, built from the same numbers as its table (`sentences`); the claims a heading or title may
make, computed from the results and never assumed (`claims`); what changed in the answer since the
last build (`changes`).

It imports nothing of the package, so every layer can use it; each function is tested against the
table it speaks for.
"""

from .numbers import (
    DASH,
    HEADERS,
    cell,
    count,
    duration,
    header,
    interval,
    number,
    percent,
    reader_table,
    sentence,
)
from .sentences import (
    b_noise_line,
    learning_rate_context,
    lr_label,
    shape_sentence,
    trend_kind,
    trend_sentence,
    trend_title,
)

__all__ = ["DASH", "HEADERS", "b_noise_line", "cell", "count", "duration", "header", "interval",
           "learning_rate_context", "lr_label", "number", "percent", "reader_table", "sentence",
           "shape_sentence", "trend_kind", "trend_sentence", "trend_title"]
