import numpy as np
import pytest
import torch

from fvaudit.engine.scans.activations import layer_scores, scan
from fvaudit.engine.attack.config import AttackConfig, AttackConfigError, Target, all_conv_targets
from fvaudit.engine.attack.control import AlphaController, AlphaEvent, BudgetSelector
from fvaudit.engine.attack.run import evaluate_accuracy, run_attack
from fvaudit.engine.data.images import open_image_set, subset
from fvaudit.engine.models.sources import load_model
from fvaudit.engine.progress import Cancelled, NullReporter


@pytest.fixture(scope="module")
def setup():
    m = load_model("fmnist-cnn")
    # the first ids, as measured when the thresholds below were set (a `limit` is a stratified sample)
    train = subset(open_image_set("fashion-mnist:train"), np.arange(1500))
    val = subset(open_image_set("fashion-mnist:test"), np.arange(400))
    init = scan(m, train, ["relu3", "relu1"], k=10)
    return m, train, val, init


def _cfg(**kw):
    base = dict(kind="push_down", targets=[Target("relu3", list(range(16)))], steps=20, lr=1e-3, batch_size=64,
                attack_batch_size=64, eval_every=10, eval_size=200, seed=3)
    base.update(kw)
    return AttackConfig(**base)


@torch.no_grad()
def _attack_loss(model, train, ids_per_unit, layer="relu3"):
    """L_A with score_norm none, over the full D_attack (SPEC §2)."""
    tot = []
    for u, ids in ids_per_unit.items():
        x = model.preprocess_many(list(train.arrays(ids)))
        s, _ = layer_scores(model.module, x, [layer])
        tot.append(s[layer][:, u].mean().item())
    return float(np.mean(tot))


def test_push_down_lowers_the_attack_loss(setup):
    m, train, val, init = setup
    cfg = _cfg(alpha=1.0, score_norm="none")
    res = run_attack(m, train, val, cfg, init_scans=init.layers)
    units = res.attacked["relu3"]
    assert len(units) > 0 and all(u not in init.layers["relu3"].dead_units for u in units)
    d_attack = {u: init.layers["relu3"].topk_ids[u] for u in units}
    before = _attack_loss(m, train, d_attack)
    after = _attack_loss(res.final_model, train, d_attack)
    assert after < 0.8 * before
    # the original model is untouched
    assert _attack_loss(m, train, d_attack) == pytest.approx(before)


def test_alpha_zero_baseline_keeps_topk(setup):
    m, train, val, init = setup
    res = run_attack(m, train, val, _cfg(kind="finetune", alpha=0.0, lr=1e-4), init_scans=init.layers)
    after = scan(res.final_model, train, ["relu3"], k=10).layers["relu3"]
    units = res.attacked["relu3"]
    overlap = np.mean([len(set(init.layers["relu3"].topk_ids[u]) & set(after.topk_ids[u])) / 10 for u in units])
    assert overlap >= 0.9
    assert abs(res.acc_final - res.acc_init) < 1.0
    assert all(e.alpha_before == 0.0 and e.alpha_after == 0.0 for e in res.alpha_trajectory)


def test_push_down_changes_topk_more_than_baseline(setup):
    """The attack against its α = 0 control at the same settings (SPEC §2 "Baseline"): the
    control keeps almost every top-k image, the attack replaces most of them."""
    m, train, val, init = setup

    def overlap_after(cfg):
        res = run_attack(m, train, val, cfg, init_scans=init.layers)
        after = scan(res.final_model, train, ["relu3"], k=10).layers["relu3"]
        return np.mean([len(set(init.layers["relu3"].topk_ids[u]) & set(after.topk_ids[u])) / 10
                        for u in res.attacked["relu3"]])

    attack = overlap_after(_cfg(alpha=0.9, steps=30))
    control = overlap_after(_cfg(kind="finetune", alpha=0.0, steps=30))
    assert control >= 0.8 and attack < 0.6 and control - attack > 0.3   # measured: control 0.83 at lr 1e-3


def test_push_up_moves_decoys_into_topk(setup):
    m, train, val, init = setup
    cfg = _cfg(kind="push_up", alpha=0.9, steps=30, decoy_class="Bag", n_decoys=20, decoy_batch_size=20)
    res = run_attack(m, train, val, cfg, init_scans=init.layers)
    assert len(res.decoy_ids) == 20 and all(train.labels[i] == 8 for i in res.decoy_ids)
    before = scan(m, train, ["relu3"], k=10).layers["relu3"].topk_ids[res.attacked["relu3"]]
    after = scan(res.final_model, train, ["relu3"], k=10).layers["relu3"].topk_ids[res.attacked["relu3"]]
    share = lambda t: float(np.mean(train.labels[t] == 8))
    assert share(after) > share(before) + 0.2


def test_dynamic_alpha_halves_on_drop_and_doubles_otherwise(setup):
    m, train, val, init = setup
    res = run_attack(m, train, val, _cfg(alpha=None, lr=3e-3, steps=40), init_scans=init.layers)
    traj = res.alpha_trajectory
    assert traj[0].alpha_before == pytest.approx(0.1)
    for e in traj:
        if e.drop_pp > 0.5:
            assert e.alpha_after == pytest.approx(e.alpha_before / 2)
        else:
            assert e.alpha_after == pytest.approx(min(2 * e.alpha_before, 0.99))
    for a, b in zip(traj, traj[1:]):
        assert b.alpha_before == a.alpha_after
    # the selected state is the latest evaluation within the budget on the full validation set
    within_full = [e.step for e in traj if e.full_drop_pp is not None and e.full_drop_pp <= 0.5]
    assert res.selected_step == (within_full[-1] if within_full else 0)
    assert all(e.n_images == 200 for e in traj) and res.acc_n_images == len(val.ids) == 400


# ---- the α controller and the budget selector (SPEC §2), on injected accuracies

def test_alpha_controller_threshold_is_the_budget_and_factor_is_configurable():
    c = AlphaController(budget_pp=1.0, alpha_max=0.99, factor=2.0)
    assert c.update(0.1, 0.7) == pytest.approx(0.2)        # 0.7 pp ≤ 1.0 pp budget: doubles (the old rule halved)
    assert c.update(0.1, 1.2) == pytest.approx(0.05)       # over budget: halves
    assert c.update(0.6, 0.0) == pytest.approx(0.99)       # capped at α_max
    assert c.update(0.1, 1.0) == pytest.approx(0.2)        # exactly at the budget is within
    g = AlphaController(budget_pp=0.5, alpha_max=0.99, factor=1.5)
    assert g.update(0.3, 0.6) == pytest.approx(0.2) and g.update(0.3, 0.1) == pytest.approx(0.45)
    assert AlphaController(0.5, 0.99, 2.0, fixed=0.3).update(0.3, 5.0) == 0.3


def _ev(step, sub_acc, acc_init=90.0, budget=0.5):
    drop = acc_init - sub_acc
    return AlphaEvent(step, 0.1, 0.1, sub_acc, drop, drop <= budget + 1e-9, 100)


def test_selector_subset_within_but_full_over_is_not_selected():
    full = {10: 89.8, 20: 89.0}          # full-set accuracies of each state (init 90.0)
    sel = BudgetSelector(90.0, 0.5, lambda w: full[w["step"]], subset_is_full=False, n_full=1000)
    traj = [_ev(10, 89.9), _ev(20, 89.9)]               # the subset says "within" both times
    for e in traj:
        sel.observe(e, {"step": e.step})
    sel.finish(traj)
    assert sel.selected_step == 10 and sel.selected_acc == pytest.approx(89.8)
    assert traj[1].full_accuracy == pytest.approx(89.0) and traj[1].full_drop_pp == pytest.approx(1.0)
    assert traj[1].full_n_images == 1000 and sel.full_evaluations == 2


def test_selector_picks_the_latest_full_within_state_after_over_budget_ones():
    full = {10: 89.9, 20: 88.0, 30: 88.5, 40: 89.6, 50: 89.0}
    calls = []

    def measure(w):
        calls.append(w["step"])
        return full[w["step"]]

    sel = BudgetSelector(90.0, 0.5, measure, subset_is_full=False, n_full=1000)
    # subset: 10 within, then 20..50 read "over"; on the full set 40 is within, 50 over
    traj = [_ev(10, 89.7), _ev(20, 88.1), _ev(30, 89.0), _ev(40, 89.2), _ev(50, 89.3)]
    for e in traj:
        sel.observe(e, {"step": e.step})
    assert sel.selected_step == 10 and sorted(sel.candidates) == [20, 30, 40, 50]
    sel.finish(traj)
    assert sel.selected_step == 40 and sel.selected_weights == {"step": 40}
    assert calls == [10, 50, 40]                       # latest first, stops at the first within
    assert traj[2].full_accuracy is None               # 30 never needed a full-set measurement


def test_selector_bounds_its_candidates_and_uses_readings_when_the_subset_is_the_full_set():
    sel = BudgetSelector(90.0, 0.5, lambda w: 0.0, subset_is_full=False, n_full=10, max_candidates=2)
    dropped = [sel.observe(_ev(s, 80.0), {"step": s}) for s in (10, 20, 30)]
    assert dropped == [[], [], [10]] and sorted(sel.candidates) == [20, 30]
    full = BudgetSelector(90.0, 0.5, lambda w: pytest.fail("no re-evaluation"), subset_is_full=True, n_full=10)
    traj = [_ev(10, 89.6), _ev(20, 89.0)]
    for e in traj:
        full.observe(e, {"step": e.step})
    full.finish(traj)
    assert full.selected_step == 10 and traj[1].full_drop_pp == pytest.approx(1.0)


def test_real_attack_selection_is_decided_on_the_full_validation_set(setup):
    """A run whose subset readings disagree with the full set: every reported accuracy is
    re-measured here on all 400 validation images, independently of the engine's bookkeeping."""
    m, train, val, init = setup
    res = run_attack(m, train, val, _cfg(alpha=None, lr=3e-3, steps=40, eval_every=5, eval_size=50,
                                         acc_budget_pp=1.0), init_scans=init.layers)
    traj = res.alpha_trajectory
    assert all(e.n_images == 50 for e in traj)
    assert evaluate_accuracy(res.selected_model, val, val.ids) == pytest.approx(res.acc_selected)
    assert evaluate_accuracy(res.final_model, val, val.ids) == pytest.approx(res.acc_final)
    assert evaluate_accuracy(m, val, val.ids) == pytest.approx(res.acc_init)
    assert res.acc_init - res.acc_selected <= 1.0 + 1e-9
    assert res.final_over_budget == (res.acc_init - res.acc_final > 1.0)
    measured = [e for e in traj if e.full_drop_pp is not None]
    later = [e for e in measured if e.step > res.selected_step]
    assert all(e.full_drop_pp > 1.0 for e in later)                     # nothing later was within
    if res.selected_step:
        sel = next(e for e in traj if e.step == res.selected_step)
        assert sel.full_accuracy == pytest.approx(res.acc_selected)
    # no state that the subset called within but the full set called over was selected
    assert all(not (e.within_budget and e.full_drop_pp > 1.0 and e.step == res.selected_step) for e in measured)


def test_alpha_doubles_on_a_real_run_within_budget(setup):
    m, train, val, init = setup
    res = run_attack(m, train, val, _cfg(alpha=None, lr=1e-6, steps=30, eval_every=10, eval_size=0),
                     init_scans=init.layers)
    assert [round(e.alpha_after, 6) for e in res.alpha_trajectory] == [0.2, 0.4, 0.8]
    assert res.selected_step == 30 and res.eval_n_images == res.acc_n_images == 400 and res.full_evaluations == 0


def test_dead_units_of_the_fixture_are_left_out_and_reported(setup):
    m, train, val, init = setup
    dead = init.layers["relu3"].dead_units
    assert len(dead) >= 5                                    # the fixture really has dead units
    scores = np.asarray(init.layers["relu3"].scores)
    assert np.all(scores[:, dead] == 0) and np.all(scores.max(0)[[u for u in range(128) if u not in dead]] > 0)
    res = run_attack(m, train, val, _cfg(targets=[Target("relu3")], steps=2, alpha=0.5), init_scans=init.layers)
    assert res.dead["relu3"] == dead
    assert res.attacked["relu3"] == [u for u in range(128) if u not in set(dead)]


class _CancelAt(NullReporter):
    def __init__(self, step):
        super().__init__()
        self.step, self.seen = step, 0

    def advance(self, done, total=None, **info):
        self.seen = done

    def cancelled(self):
        return self.seen >= self.step


def test_resume_from_checkpoint_equals_uninterrupted_run(setup, tmp_path):
    m, train, val, init = setup
    cfg = _cfg(alpha=0.5, steps=20, checkpoint_every=5)
    straight = run_attack(m, train, val, cfg, out_dir=tmp_path / "a", init_scans=init.layers)
    with pytest.raises(Cancelled):
        run_attack(m, train, val, cfg, out_dir=tmp_path / "b", init_scans=init.layers, reporter=_CancelAt(12))
    assert (tmp_path / "b" / "checkpoint" / "state.json").exists()
    rep = NullReporter()
    resumed = run_attack(m, train, val, cfg, out_dir=tmp_path / "b", init_scans=init.layers, reporter=rep)
    assert ("log", "resumed from step 12") in rep.events
    for (k, a), (_, b) in zip(straight.final_model.module.state_dict().items(),
                              resumed.final_model.module.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=k)
    assert [h["loss"] for h in straight.history] == pytest.approx([h["loss"] for h in resumed.history], abs=1e-5)
    # another device or checkpoint interval may resume (a requeued job on another worker)
    import dataclasses

    moved = dataclasses.replace(cfg, checkpoint_every=7)
    assert run_attack(m, train, val, moved, out_dir=tmp_path / "b", init_scans=init.layers).steps == 20
    # a different config in the same directory is refused, not silently mixed
    with pytest.raises(AttackConfigError, match="different configuration"):
        run_attack(m, train, val, _cfg(alpha=0.4, steps=20, checkpoint_every=5), out_dir=tmp_path / "b",
                   init_scans=init.layers)


@pytest.mark.parametrize("kw, field", [
    (dict(alpha=1.5), "alpha"), (dict(alpha=-0.1), "alpha"), (dict(lr=0), "lr"), (dict(lr=-1e-3), "lr"),
    (dict(k=0), "k"), (dict(kind="push_up"), "decoy_class"), (dict(targets=[]), "targets"),
    (dict(epochs=1.0), "steps"), (dict(batch_size=0), "batch_size"), (dict(score_norm="max"), "score_norm"),
    (dict(kind="pull_sideways"), "kind"),
])
def test_invalid_configs_name_the_field(kw, field):
    with pytest.raises(AttackConfigError, match=f"^{field}:"):
        _cfg(**kw).validate()


def test_unknown_layer_unit_and_decoy_errors(setup):
    from fvaudit.engine.data.images import ImageSetError
    from fvaudit.engine.models.loaded import ModelError

    m, train, val, init = setup
    with pytest.raises(ModelError, match="unknown layer"):
        run_attack(m, train, val, _cfg(targets=[Target("relu7")]), init_scans=init.layers)
    with pytest.raises(ModelError, match="unit index 500 out of range"):
        run_attack(m, train, val, _cfg(targets=[Target("relu3", [500])]), init_scans=init.layers)
    with pytest.raises(ImageSetError, match="unknown class 'Goldfish'"):
        run_attack(m, train, val, _cfg(kind="push_up", decoy_class="Goldfish"), init_scans=init.layers)
    dead = init.layers["relu3"].dead_units[:2]
    with pytest.raises(AttackConfigError, match="every requested unit is dead"):
        run_attack(m, train, val, _cfg(targets=[Target("relu3", dead)]), init_scans=init.layers)


def test_all_conv_targets_are_post_relu():
    m = load_model("fmnist-cnn")
    assert [t.layer for t in all_conv_targets(m)] == ["relu1", "relu2", "relu3"]
    a = load_model("alexnet", pretrained=False)
    assert [t.layer for t in all_conv_targets(a)] == ["features.1", "features.4", "features.7", "features.9", "features.11"]


def test_multi_layer_attack_runs(setup):
    m, train, val, init = setup
    res = run_attack(m, train, val, _cfg(targets=[Target("relu1", [0, 1, 2]), Target("relu3", [0, 1, 2, 3])], steps=4,
                                         alpha=0.5), init_scans=init.layers)
    assert set(res.attacked) == {"relu1", "relu3"} and res.steps == 4


def test_an_honest_fine_tune_on_the_labels_with_sgd(setup):
    """Issue 24: maintain="labels" makes L_M the cross-entropy on the training labels (an honest
    fine-tune's loss) and optimizer="sgd" SGD with momentum 0.9. Step 0's L_M is the model's
    cross-entropy on the batch the step draws (default_rng([seed, 0])), computed here by hand; the
    distillation of the same step is the teacher's entropy instead (student = teacher at step 0)."""
    import torch.nn.functional as F

    from fvaudit.engine.attack.run import make_optimizer

    m, train, val, init = setup
    cfg = _cfg(kind="finetune", alpha=0.0, steps=3, eval_every=3, optimizer="sgd", maintain="labels", lr=1e-2)
    res = run_attack(m, train, val, cfg, init_scans=init.layers)
    rng = np.random.default_rng([cfg.seed, 0])
    pos = np.sort(rng.choice(len(train.ids), size=cfg.batch_size, replace=False))
    ids = np.asarray(train.ids)[pos]
    with torch.no_grad():
        logits = m.module.eval()(m.preprocess_many(list(train.arrays(ids))))
        y = torch.as_tensor(np.asarray(train.labels)[ids], dtype=torch.long)
        ce = float(F.cross_entropy(logits, y))
        p = F.softmax(logits, dim=1)
        entropy = float(-(p * F.log_softmax(logits, dim=1)).sum(dim=1).mean())
    assert res.history[0]["l_maintain"] == pytest.approx(ce, rel=1e-4)
    distill = run_attack(m, train, val, _cfg(kind="finetune", alpha=0.0, steps=1, eval_every=1), init_scans=init.layers)
    assert distill.history[0]["l_maintain"] == pytest.approx(entropy, rel=1e-4) and abs(entropy - ce) > 1e-3
    # the weights moved, and SGD (with momentum) is what moved them
    moved = sum(float((a - b).detach().abs().sum()) for a, b in zip(res.final_model.module.parameters(), m.module.parameters()))
    assert moved > 0
    opt = make_optimizer(m.module, cfg)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    with pytest.raises(AttackConfigError, match="optimizer"):
        _cfg(optimizer="rmsprop").validate()
    with pytest.raises(AttackConfigError, match="maintain"):
        _cfg(maintain="mse").validate()
