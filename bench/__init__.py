"""Benchmarks of vipa: they print numbers and ratios; tests never assert on timings.

Run each one as a module from the repository root:

    python -m bench.speed        # latency, throughput, memory, cost: VIPA vs the classic decoder
    python -m bench.components   # parameters, FLOPs and time per model part
    python -m bench.ablation     # train the paper's ablations and summarize them
    python -m bench.retrieval    # does VEG retrieve the target, does the prediction follow the text
    python -m bench.photo --checkpoint CKPT  # a 12 MP photo against a 0.24 MP one: time, memory
    python -m bench.presence CKPT        # where "no match" fails, per kind of no-match phrase
    python -m bench.presence_probe CKPT  # does the presence head's input hold what it misses
    python -m bench.shape_probe CKPT     # what each fused stage says about shape and colour

Modules: ``speed`` (timing, orchestration, CLI), ``memory`` (peak-memory
probes), ``coldstart`` (``vipa predict`` as a fresh process), ``report``
(markdown of a speed report), ``models`` (benchmark models and inputs),
``components`` (per-part split and shared helpers), ``ablation`` and
``retrieval``. The tests under ``tests/test_bench_*.py`` check that they run and
that their reports are consistent; they never assert on how fast anything is.
"""
