"""Run folders to tables and verdicts: aggregation (`aggregate`), the tables' loading and derived
columns (`tables`), seed replicates and noise (`replicates`, `seed_noise`), the stability-fix
settings (`stability`), the pairwise transfer error (`transfer_error`) and the replication
scorecard's claims (`claims`). No plotting here.

May import: `umup_repro.core`, `umup_repro.training` (the run-folder checks), `umup_repro.sweeps`.
"""
