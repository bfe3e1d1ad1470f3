"""The model and its parametrizations: the abc-rules as data (`parametrization`), unit-scaled ops
(`ops`), FP8 casts (`fp8`), the Llama-style decoder (`decoder`), Adam's parameter groups and the
schedule (`optim`), RMS probes (`rms`), the per-weight table of a run folder
(`parametrization_table`) and the FLOPs of a config (`flops`, torch-free).

May import: `umup_repro.core`.
"""
