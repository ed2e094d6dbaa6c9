"""Pruning defences (SPEC §5): what a pruning did and the masks that keep its zeros
(:mod:`.masks`), the methods (norm, OTO, vulnerability: :mod:`.methods`), the fine-tune
(:mod:`.finetune`), the one :func:`~.prune.prune` with its shared defaults
(:mod:`.defaults`), and the sweep with its table and plot (:mod:`.sweep`, :mod:`.sweep_table`,
:mod:`.sweep_plot`)."""
