"""The attacks on dataset examples (SPEC §2, §8): settings and defaults (:mod:`.config`,
:mod:`.defaults`), the loss (:mod:`.loss`), the α controller and the budget selector
(:mod:`.control`), the resumable checkpoint (:mod:`.checkpoint`) and the run (:mod:`.run`)."""
