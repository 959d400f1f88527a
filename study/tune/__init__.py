"""The study service on Ray Tune.

Rooms: :mod:`~study.tune.trial` (the trainable), :mod:`~study.tune.callbacks`
(StoreCallback, ProgressLine), :mod:`~study.tune.search` (CellSearcher,
PerCellScheduler), :mod:`~study.tune.runner` (connect, checks, build_tuner,
run_sweep, the spec copy) and :mod:`~study.tune.status` (a study's progress).
Nothing is imported here, so that importing one room does not start Ray's imports.
"""
