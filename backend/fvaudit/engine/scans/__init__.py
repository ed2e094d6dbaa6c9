"""Dataset examples (SPEC §1): unit scores, streaming top-k and score matrices over an image
set (:mod:`.activations`), and the row-range shards of a scan with their exact merge
(:mod:`.shards`)."""
