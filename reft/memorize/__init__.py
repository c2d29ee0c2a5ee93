"""Memorization capacity: how much text can one intervention make a frozen model recite?

The ReFT paper's test: one rank-1 input-free intervention (ConsReFT) on the last token of a short
key prompt, trained until greedy decoding recites N target tokens exactly. Pieces: text sources
(`workbench.data.texts`), targets and variants (``targets``), the frozen forward with and without caching
(``paths``), one run (``experiment``), K runs in one batched forward (``batched``), resumable sweeps (``sweep``) and their figure (``figure``).

>>> from workbench import load_model                                              # doctest: +SKIP
>>> hm = load_model()                                                             # doctest: +SKIP
>>> task = task_for(hm.tokenizer, load_text("alice"), n_tokens=64)                # doctest: +SKIP
>>> memorize(hm, task, MemorizeConfig(n_tokens=64, layer=15))["exact"]            # doctest: +SKIP
True
"""

from .batched import RowGroups, memorize_batched, stack_tasks
from .experiment import MemorizeConfig, RunTracker, greedy_prefix, memorize
from .figure import capacity_figure
from .metric import prefix_lengths, prefix_share
from .paths import CachedForward, NaiveForward, make_forward, memorization_loss
from .sweep import capacity_table, expand_grid, memorize_sweep
from .targets import DEFAULT_KEY, VARIANTS, MemorizationTask, build_task, task_for
from workbench.data.texts import alice_path, load_text, normalize_book

__all__ = [
    "CachedForward", "DEFAULT_KEY", "MemorizationTask", "MemorizeConfig", "NaiveForward", "VARIANTS",
    "alice_path", "build_task", "capacity_figure", "capacity_table", "expand_grid", "greedy_prefix",
    "RowGroups", "RunTracker", "load_text", "make_forward", "memorization_loss", "memorize", "memorize_batched",
    "memorize_sweep", "stack_tasks", "normalize_book",
    "prefix_lengths", "prefix_share", "task_for",
]
