"""The measuring harness: is it right, how fast, against what.

``check`` (fp64 reference, NaN-poisoned outputs, the pass rule, determinism), ``reference`` (the fp64 attention),
``bench`` (CUDA-graph replay timing, FLOP and byte counts), ``measure`` (the one routine every chapter, the command
line and the sweeps call: check, then time beside the peers, into a run record) and ``progress`` (the one
progress bar). Importing this package touches no GPU; the functions that launch need one.
"""
