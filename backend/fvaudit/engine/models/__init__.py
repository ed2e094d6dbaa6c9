"""Models in: the registry where each source registers itself (:mod:`.registry`), the sources
(demo CNN, EfficientNet-Lite, torchvision, timm: :mod:`.sources`, :mod:`.fmnist_cnn`,
:mod:`.timm_family`), the loaded-model type and its layer list (:mod:`.loaded`), checkpoints
read without executing code (:mod:`.checkpoints`) and the surgery that resizes an
architecture to a structurally pruned checkpoint (:mod:`.surgery`)."""
