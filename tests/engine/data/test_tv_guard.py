import importlib


def test_guard_makes_torchvision_importable_and_models_work():
    import fvaudit._tv_guard as guard
    import torch
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    # the op either exists natively or the guard defined its schema
    assert hasattr(torch.ops.torchvision, "nms")
    m = torchvision.models.alexnet(weights=None).eval()
    fx = create_feature_extractor(m, ["features.11"])
    out = fx(torch.zeros(1, 3, 224, 224))["features.11"]
    assert out.shape == (1, 256, 13, 13)
    # applying again is a no-op that reports the same state
    assert guard.apply() == guard.GUARD_APPLIED
    importlib.reload(torchvision.models)
