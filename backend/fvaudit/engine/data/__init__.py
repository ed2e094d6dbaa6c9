"""Images in (SPEC §1 data): image sets (folders, Fashion-MNIST, seeded class-stratified
limits, subsets) and decoding with its bounded cache (:mod:`.images`); the input pipeline that
decodes and preprocesses in DataLoader workers, and the step-by-step training batches of the
attacks and the fine-tune (:mod:`.pipeline`)."""
