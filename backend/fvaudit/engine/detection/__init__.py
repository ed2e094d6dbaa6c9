"""Detection (SPEC §6): per-unit evidence, calibration against clean models and verdicts
(:mod:`.evidence`), and the run that scans every model and combines them (:mod:`.run`)."""
