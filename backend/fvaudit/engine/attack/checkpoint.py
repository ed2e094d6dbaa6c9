"""An attack's resumable checkpoint (SPEC §2): weights, optimizer, the run's state (step, α,
trajectory, history) and the budget selector's selection and candidates, saved and restored
as one object. A run resumed from it follows exactly the path of an uninterrupted one (every
step's batches depend on (seed, step) only)."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from fvaudit.engine.attack.config import AttackConfig, AttackConfigError
from fvaudit.engine.attack.control import AlphaEvent, BudgetSelector
from fvaudit.engine.models.checkpoints import load_state_dict_file, save_checkpoint

class RunState:
    """What a checkpoint holds besides weights and optimizer state."""

    def __init__(self, alpha: float):
        self.step = 0
        self.alpha = alpha
        self.trajectory: list[AlphaEvent] = []
        self.history: list[dict] = []

    def to_json(self, selector: BudgetSelector) -> dict:
        return {"step": self.step, "alpha": self.alpha, "trajectory": [asdict(e) for e in self.trajectory], "history": self.history,
                "selected_step": selector.selected_step, "selected_acc": selector.selected_acc,
                "candidates": sorted(selector.candidates), "full_evaluations": selector.full_evaluations}

    def load(self, d: dict, selector: BudgetSelector) -> None:
        self.step, self.alpha = int(d["step"]), float(d["alpha"])
        self.trajectory = [AlphaEvent(**e) for e in d["trajectory"]]
        self.history = list(d["history"])
        selector.selected_step, selector.selected_acc = int(d["selected_step"]), float(d["selected_acc"])
        selector.full_evaluations = int(d.get("full_evaluations", 0))


class Checkpoint:
    """The checkpoint directory of one attack run (``<out>/checkpoint``)."""

    def __init__(self, directory: Path, cfg: AttackConfig):
        self.dir, self.cfg = Path(directory), cfg

    def exists(self) -> bool:
        return (self.dir / "state.json").exists()

    def restore(self, module: torch.nn.Module, opt: torch.optim.Optimizer, state: RunState,
                selector: BudgetSelector, device: torch.device) -> None:
        """Load everything back; a checkpoint of another configuration is refused."""
        saved = json.loads((self.dir / "state.json").read_text())
        if _resume_key(saved.get("config") or {}) != _resume_key(self.cfg.to_json()):
            raise AttackConfigError(f"checkpoint in {self.dir} was written by a different configuration; "
                                    "use a new run directory or resume=False")
        state.load(saved["state"], selector)
        module.load_state_dict(load_state_dict_file(self.dir / "weights.safetensors"))
        opt.load_state_dict(torch.load(self.dir / "optimizer.pt", weights_only=True, map_location=device))
        if (self.dir / "selected.safetensors").exists():
            selector.selected_weights = load_state_dict_file(self.dir / "selected.safetensors")
        for s in saved["state"].get("candidates", []):
            selector.candidates[int(s)] = load_state_dict_file(self.dir / f"candidate_{int(s)}.safetensors")

    def save(self, module: torch.nn.Module, opt: torch.optim.Optimizer, state: RunState,
             selector: BudgetSelector) -> None:
        """Write it atomically file by file; ``state.json`` last, candidates it no longer names after."""
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        save_checkpoint(module, d / "weights.safetensors")
        tmp = d / "optimizer.pt.tmp"
        torch.save(opt.state_dict(), tmp)
        tmp.replace(d / "optimizer.pt")
        if selector.selected_weights is not None:
            _save_state_dict(selector.selected_weights, d / "selected.safetensors")
        for s, w in selector.candidates.items():
            if not (d / f"candidate_{s}.safetensors").exists():
                _save_state_dict(w, d / f"candidate_{s}.safetensors")
        tmp = d / "state.json.tmp"
        tmp.write_text(json.dumps({"config": self.cfg.to_json(), "state": state.to_json(selector)}))
        tmp.replace(d / "state.json")
        for f in d.glob("candidate_*.safetensors"):
            if int(f.stem.split("_")[1]) not in selector.candidates:
                f.unlink(missing_ok=True)


def _resume_key(config: dict) -> dict:
    """The parts of a config a checkpoint must match to be resumed: all but the device and
    the checkpoint interval (a requeued job may land on another worker, CPU or GPU)."""
    return {k: v for k, v in config.items() if k not in ("device", "checkpoint_every")}


def _save_state_dict(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    tmp.replace(path)
