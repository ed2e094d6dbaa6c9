"""Synthetic feature visualization (SPEC §4): objectives, image parameterisations, transforms
and the render loop (:mod:`.render`)."""
