"""A structurally pruned checkpoint uploaded through the API keeps its pruned layer widths (SPEC §5)."""
from __future__ import annotations


def test_upload_of_a_vulnerability_pruned_checkpoint_lists_the_pruned_widths(stack, tmp_path):
    from fvaudit.engine.models.checkpoints import save_checkpoint
    from fvaudit.engine.models.sources import load_model
    from fvaudit.engine.defence.methods import vulnerability_prune

    lm = load_model("fmnist-cnn")
    report = vulnerability_prune(lm, "relu3", [0, 5, 7])
    assert report.layers  # something was removed
    path = save_checkpoint(lm.module, tmp_path / "pruned.safetensors", {"registry_name": "fmnist-cnn"})
    with open(path, "rb") as fh:
        r = stack.post("/api/v1/models/upload", files={"file": (path.name, fh)},
                       data={"registry_name": "fmnist-cnn", "name": "relu3 minus 3 channels"})
    assert r.status_code == 201, r.text
    layers = {l["name"]: l for l in stack.get(f"/api/v1/models/{r.json()['id']}/layers").json()}
    assert layers["relu3"]["units"] == 128 - 3
    assert layers["relu2"]["units"] == lm.layer("relu2").units  # the layer before is untouched
