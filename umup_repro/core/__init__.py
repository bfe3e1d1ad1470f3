"""The floor every stage stands on: the cell config (`config`), atomic writes (`atomic`) and the
one bounded YAML reader (`safe_yaml`).

May import: nothing of umup_repro outside this package (and no torch: planning a sweep must not pay
for it).
"""
