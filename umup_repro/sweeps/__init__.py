"""Presets to cells: loading and checking a preset (`presets`, `preset_checks`), expanding its
sweeps into cells (`grid`), their compute budget (`budget`) and the `umup-repro cells` report
(`cells`), and the staged search's stage decisions (`search_stage`).

May import: `umup_repro.core`, and `umup_repro.training`'s run-folder format (`run_format`: the
staged search decides from finished runs, verified before they are read); never torch.
"""
