"""Training one cell into its run folder: the `umup-repro train` command (`train`), the
LightningModule (`lightning_module`), the run folder's lifecycle (`run_folder`) and its format with
the checks of what is read back (`run_format`), several processes for one cell (`distributed`),
optional loggers (`loggers`, `logger_callback`), and what a summary records about where and with
which code it ran (`provenance`, `code_fingerprint`).

May import: `umup_repro.core`, `umup_repro.model`, `umup_repro.data`.
"""
