"""Cards of artifact folders, every number computed from the folder's own files.

`dataset` (dataset cards), `stats` (per-kind statistics, token usage), `plots` (images/), `model`
(model cards, eval results, Space cards), `sweep` (checkpoint sweeps), `templates` (Jinja templates).
"""
