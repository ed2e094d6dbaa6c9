"""The CLI end to end on small subsets: run directories hold what they promise."""
import csv
import json

import numpy as np
import pytest

from fvaudit.cli import main


def test_models_lists_registry_and_layers(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "fmnist-cnn" in out and "efficientnet-lite0" in out and "alexnet" in out
    assert main(["models", "--model", "fmnist-cnn"]) == 0
    assert "relu3" in capsys.readouterr().out


def test_scan_metrics_report_attack(tmp_path, capsys):
    out = tmp_path / "scan"
    assert main(["scan", "--images", "fashion-mnist:test", "--limit", "300", "--layers", "relu3,relu1",
                 "--k", "5", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["n_images"] == 300 and cfg["layers"] == ["relu3", "relu1"]
    scores = np.load(out / "scores" / "scores_relu3.npy")
    assert scores.shape == (300, 128) and scores.dtype == np.float32
    topk = json.loads((out / "topk" / "scan_model_relu3.json").read_text())
    assert len(topk["ids"]) == 128 and len(topk["ids"][0]) == 5
    assert (out / "versions.json").exists()

    # comparing a scan with itself: τ = 1, overlap = 1, CLIP-δ = 0
    assert main(["metrics", "--before", str(out), "--after", str(out), "--embedder", "efficientnet-lite0",
                 "--out", str(tmp_path / "m")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "m" / "metrics_relu3.csv")))
    live = [r for r in rows]
    assert live and all(float(r["kendall_tau"]) == pytest.approx(1.0) for r in live)
    assert all(float(r["topk_overlap"]) == 1.0 for r in live)
    assert all(abs(float(r["clip_delta"])) < 1e-9 for r in live)
    m = json.loads((tmp_path / "m" / "metrics_relu3.json").read_text())
    assert m["embedder"] == "classifier:efficientnet-lite0:pooled"

    run = tmp_path / "attack"
    assert main(["attack", "--kind", "push_down", "--layers", "relu3", "--units", "0,1,2,3,4,5,6,7",
                 "--steps", "6", "--batch-size", "64", "--eval-every", "3", "--eval-size", "100",
                 "--limit-train", "600", "--limit-val", "200", "--alpha", "0.5", "--lr", "1e-3",
                 "--embedder", "efficientnet-lite0", "--out", str(run)]) == 0
    printed = capsys.readouterr().out
    assert "CLIP-δ" in printed and "Kendall-τ-W" in printed
    for f in ["config.json", "versions.json", "attack.json", "alpha_trajectory.csv", "history.csv", "table.txt",
              "selected.safetensors", "final.safetensors", "metrics_relu3.json", "metrics_relu3.csv",
              "checkpoint/state.json", "scores/val_init_relu3.npy", "scores/val_selected_relu3.npy",
              "topk/train_selected_relu3.json", "final/metrics_relu3.json"]:
        assert (run / f).exists(), f
    summary = json.loads((run / "attack.json").read_text())
    assert summary["steps"] == 6 and len(summary["alpha_trajectory"]) == 2
    assert set(summary["attacked"]["relu3"]) <= set(range(8))
    # both states are measured and reported, each accuracy on all 200 validation images
    states = [r["state"] for r in summary["table_rows"]]
    assert states == ["selected", "final"]
    assert all(r["acc_n_images"] == 200 for r in summary["table_rows"])
    assert summary["table_rows"][1]["step"] == 6 and summary["table_rows"][0]["step"] == summary["selected_step"]
    assert all(e["n_images"] == 100 for e in summary["alpha_trajectory"])
    hist = list(csv.DictReader(open(run / "history.csv")))
    assert [int(h["step"]) for h in hist] == [1, 2, 3, 4, 5, 6]
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "relu3 push_down" in out and "selected" in out and "final" in out and "control" not in out

    # an α = 0 control with the same settings: its row is printed next to the attack's
    ctl = tmp_path / "control"
    assert main(["attack", "--kind", "finetune", "--alpha", "0", "--layers", "relu3", "--steps", "6",
                 "--batch-size", "64", "--eval-every", "3", "--eval-size", "100", "--limit-train", "600",
                 "--limit-val", "200", "--lr", "1e-3", "--embedder", "efficientnet-lite0", "--out", str(ctl)]) == 0
    capsys.readouterr()
    assert main(["report", str(run), str(ctl)]) == 0
    lines = capsys.readouterr().out.splitlines()
    body = [l for l in lines[2:] if l.strip()]
    assert [l.split()[0] for l in body][:1] == ["fmnist-cnn"]
    assert "control" in body[0] and "selected" in body[1] and "final" in body[2]
    # a control with other settings (another lr) is not this attack's control
    other = tmp_path / "other"
    assert main(["attack", "--kind", "finetune", "--alpha", "0", "--layers", "relu3", "--steps", "6",
                 "--batch-size", "64", "--eval-every", "3", "--eval-size", "100", "--limit-train", "600",
                 "--limit-val", "200", "--lr", "2e-3", "--embedder", "none", "--out", str(other)]) == 0
    capsys.readouterr()
    assert main(["report", str(run), str(other)]) == 0
    assert sum("control" in l for l in capsys.readouterr().out.splitlines()) == 0


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["scan", "--layers", "relu9", "--limit", "10", "--out", str(tmp_path / "x")]) == 2
    assert "unknown layer 'relu9'" in capsys.readouterr().err
    assert main(["scan", "--layers", "relu3", "--k", "0", "--limit", "10", "--out", str(tmp_path / "x")]) == 2
    assert "k must be a positive integer" in capsys.readouterr().err
    assert main(["scan", "--model", "resnet9000", "--layers", "x", "--out", str(tmp_path / "x")]) == 2
    assert "unknown model 'resnet9000'" in capsys.readouterr().err
    (tmp_path / "empty" / "a").mkdir(parents=True)
    assert main(["scan", "--images", str(tmp_path / "empty"), "--layers", "relu3", "--out", str(tmp_path / "x")]) == 2
    assert "holds no readable images" in capsys.readouterr().err
    assert main(["attack", "--layers", "relu3", "--alpha", "2", "--out", str(tmp_path / "y"),
                 "--limit-train", "50", "--limit-val", "50"]) == 2
    assert "alpha: must lie in [0, 1]" in capsys.readouterr().err
    assert main(["attack", "--kind", "push_up", "--layers", "relu3", "--out", str(tmp_path / "y"),
                 "--limit-train", "50", "--limit-val", "50"]) == 2
    assert "decoy_class" in capsys.readouterr().err
    # Slingshots (SPEC §8.1): a target is needed, must be readable, and only Slingshots kinds take one
    assert main(["attack", "--kind", "slingshot", "--layers", "relu3", "--out", str(tmp_path / "y"),
                 "--limit-train", "50", "--limit-val", "50"]) == 2
    assert "target_images: slingshot needs a target image" in capsys.readouterr().err
    assert main(["attack", "--kind", "push_down", "--target", "fashion-mnist:train:3", "--layers", "relu3",
                 "--out", str(tmp_path / "y"), "--limit-train", "50", "--limit-val", "50"]) == 2
    assert "--target: only Slingshots kinds use a target image, not push_down" in capsys.readouterr().err
    assert main(["attack", "--kind", "slingshot", "--target", "no-such-file.png", "--layers", "relu3",
                 "--out", str(tmp_path / "y"), "--limit-train", "50", "--limit-val", "50"]) == 2
    assert "neither an image file nor SET:ID" in capsys.readouterr().err


def test_visualize_writes_grids_and_activations(tmp_path):
    from fvaudit.engine.models.checkpoints import save_checkpoint
    from fvaudit.engine.models.sources import load_model

    ck = save_checkpoint(load_model("fmnist-cnn").module, tmp_path / "same.safetensors")
    assert main(["visualize", "--layer", "relu3", "--units", "0,5", "--steps", "30", "--compare-checkpoint", str(ck),
                 "--out", str(tmp_path / "vis")]) == 0
    s = json.loads((tmp_path / "vis" / "synthetic.json").read_text())
    assert s["before"]["units"] == [0, 5]
    # same weights, same seed: identical images before and after
    a = np.load(tmp_path / "vis" / "synthetic_relu3_before.npz")["images"]
    b = np.load(tmp_path / "vis" / "synthetic_relu3_after.npz")["images"]
    np.testing.assert_array_equal(a, b)
    assert (tmp_path / "vis" / "synthetic_relu3_after.png").exists()
