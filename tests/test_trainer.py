"""The training loop: learning, AuxK, exact resume, checkpoints, and the errors a user can cause.

Data are synthetic: activations generated from a known sparse dictionary (a few unit atoms
per token with positive magnitudes), so a working trainer must reach a low FVU quickly.
Each batch is a pure function of its index, like a seeded activation cache.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sparselens.data.batch import ActivationBatch
from sparselens.evaluation import reconstruction_metrics
from sparselens.io.native import load_dictionary
from sparselens.training import CheckpointConfig, LogConfig, OptimConfig, TrainConfig, Trainer
from sparselens.training.config import parse_mapping
from sparselens.training.schedules import lr_factor

D_IN, N_TRUE, K_TRUE, BATCH = 16, 48, 3, 128


pytestmark = pytest.mark.usefixtures("one_thread")


def true_atoms(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    atoms = torch.randn(N_TRUE, D_IN, generator=gen)
    return atoms / atoms.norm(dim=1, keepdim=True)


ATOMS = true_atoms()


def sparse_batch(index: int, offset: float = 0.0, width: int = D_IN) -> ActivationBatch:
    """Batch `index`: K_TRUE atoms per token with magnitudes in [0.5, 1.5), plus `offset`."""
    gen = torch.Generator().manual_seed(10_000 + index)
    which = torch.rand(BATCH, N_TRUE, generator=gen).topk(K_TRUE, dim=1).indices
    values = torch.rand(BATCH, K_TRUE, generator=gen) + 0.5
    codes = torch.zeros(BATCH, N_TRUE).scatter_(1, which, values)
    x = codes @ ATOMS[:, :width] + offset
    rows = torch.arange(BATCH)
    return ActivationBatch(acts={"h": x}, token_ids=rows, seq_ids=rows, positions=rows)


def synthetic_data(offset: float = 0.0, width: int = D_IN):
    def data(skip_batches: int) -> Iterator[ActivationBatch]:
        index = skip_batches
        while True:
            yield sparse_batch(index, offset, width)
            index += 1

    return data


def heldout(n_batches: int = 4, offset: float = 0.0) -> list[ActivationBatch]:
    return [sparse_batch(1_000_000 + i, offset) for i in range(n_batches)]


def config(steps: int = 100, **overrides) -> TrainConfig:
    base = dict(n_latents=96, dictionary={"k": 4}, n_tokens=BATCH * steps, batch_size=BATCH,
                init_tokens=4 * BATCH, optim=OptimConfig(lr=5e-3),
                log=LogConfig(every_steps=10, progress=False))
    return TrainConfig(**(base | overrides))


# ---- learning ----


def test_loss_decreases_on_sparse_data(tmp_path: Path) -> None:
    trainer = Trainer(config(steps=100), synthetic_data(offset=0.3), tmp_path / "run")
    before = reconstruction_metrics(trainer.dictionary, heldout(offset=0.3), "h")["fvu"]
    trainer.fit()
    after = reconstruction_metrics(trainer.dictionary, heldout(offset=0.3), "h")
    assert after["fvu"] < 0.2 < 0.5 < before
    assert after["l0"] <= 4.0 + 1e-9
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == list(range(10, 101, 10))
    assert records[-1]["mse"] < records[0]["mse"]
    for key in ("loss", "fvu", "l0", "dead_fraction", "lr", "tokens", "tokens_per_s"):
        assert math.isfinite(records[-1][key])
    # The saved dictionary has the scales folded in and works on raw activations.
    saved = load_dictionary(tmp_path / "run")
    x = heldout(1)[0].acts["h"]
    assert saved.cfg.input_scale == 1.0
    torch.testing.assert_close(saved(x), trainer.dictionary.cpu()(x), rtol=1e-4, atol=1e-5)


def test_running_out_of_data_stops_with_a_warning(tmp_path: Path) -> None:
    def five_batches(skip_batches: int) -> Iterator[ActivationBatch]:
        return (sparse_batch(i) for i in range(skip_batches, 5))

    trainer = Trainer(config(steps=20), five_batches, tmp_path)
    with pytest.warns(UserWarning, match="ran out after 640 of 2560 tokens"):
        trainer.fit()
    assert trainer.progress.step == 5 and (tmp_path / "weights.safetensors").exists()


def test_normalisation_sets_expected_norm_and_decoder_stays_unit() -> None:
    trainer = Trainer(config(steps=20), synthetic_data(offset=2.0))
    x = trainer.dictionary.scale_input(sparse_batch(0, 2.0).acts["h"])
    assert x.norm(dim=1).mean().item() == pytest.approx(math.sqrt(D_IN), rel=0.05)
    trainer.fit()
    norms = trainer.dictionary.W_dec.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_bfloat16_autocast_trains() -> None:
    trainer = Trainer(config(steps=60, autocast="bfloat16"), synthetic_data(offset=0.3))
    trainer.fit()
    assert trainer.dictionary.W_enc.dtype == torch.float32
    assert reconstruction_metrics(trainer.dictionary, heldout(offset=0.3), "h")["fvu"] < 0.4


def test_cpu_training_hands_freed_memory_back_every_few_steps(monkeypatch) -> None:
    """bf16 steps on a CPU grew glibc's heap without bound (core/memory.py); the trainer
    trims it every TRIM_EVERY steps."""
    from sparselens.core import memory
    from sparselens.training import trainer as trainer_module

    calls: list[int] = []
    monkeypatch.setattr(trainer_module, "release_free_memory", lambda: calls.append(1) or True)
    trainer = Trainer(config(steps=25, autocast="bfloat16"), synthetic_data())
    trainer.fit()
    assert len(calls) == 25 // memory.TRIM_EVERY
    assert memory.release_free_memory() is (memory._malloc_trim() is not None)


def test_transcoder_gets_its_own_output_scale() -> None:
    def data(skip_batches: int) -> Iterator[ActivationBatch]:
        index = skip_batches
        while True:
            batch = sparse_batch(index)
            x = batch.acts["h"]
            batch.acts = {"in": x, "out": 10.0 * torch.relu(x[:, :8])}
            yield batch
            index += 1

    cfg = config(steps=30, hookpoint="in", target_hookpoint="out")
    trainer = Trainer(cfg, data)
    scales = trainer.dictionary.cfg
    assert scales.d_out == 8 and not scales.pre_encoder_bias
    assert scales.output_scale != pytest.approx(scales.input_scale, rel=0.1)
    trainer.fit()
    assert math.isfinite(float(trainer.dictionary.W_dec.detach().sum()))


def test_auxk_revives_dead_latents() -> None:
    """Half the latents start with tiny encoder columns, so they never reach the top k; AuxK
    (which trains dead latents to model the residual) must bring many of them back."""
    dead_fraction = {}
    for aux_coef in (0.0, 1 / 32):
        cfg = config(steps=120, dictionary={"k": 4, "aux_coef": aux_coef, "k_aux": 16},
                     dead_tokens=5 * BATCH)
        trainer = Trainer(cfg, synthetic_data())
        with torch.no_grad():
            trainer.dictionary.W_enc[:, :48] *= 0.05
        trainer.fit()
        dead_fraction[aux_coef] = reconstruction_metrics(trainer.dictionary, heldout(),
                                                         "h")["dead_fraction"]
    assert dead_fraction[0.0] >= 0.45
    assert dead_fraction[1 / 32] < 0.5 * dead_fraction[0.0]


def test_max_norm_ratio_leaves_massive_tokens_out_of_training() -> None:
    """Every 32nd token gets 40 times its norm (as an LM's massive activations); with
    max_norm_ratio=5 the dictionary never trains on them, yet the budget counts rows read."""
    def with_massive_tokens(skip_batches: int) -> Iterator[ActivationBatch]:
        for batch in synthetic_data(offset=0.3)(skip_batches):
            batch.acts["h"][::32] *= 40.0
            yield batch

    seen: list[tuple[int, float]] = []
    for ratio in (None, 5.0):
        trainer = Trainer(config(steps=6, max_norm_ratio=ratio), with_massive_tokens)
        def spy(x, *args, train_on=trainer.dictionary.training_loss, **kwargs):
            seen.append((x.shape[0], float(x.norm(dim=-1).max() / D_IN ** 0.5)))
            return train_on(x, *args, **kwargs)

        trainer.dictionary.training_loss = spy
        trainer.fit()
        assert trainer.progress.tokens_seen == 6 * BATCH
    unfiltered, filtered = seen[:6], seen[6:]
    assert all(rows == BATCH and peak > 5 for rows, peak in unfiltered)
    assert all(rows == BATCH - BATCH // 32 and peak <= 5 for rows, peak in filtered)
    with pytest.raises(ValueError, match="max_norm_ratio"):
        config(max_norm_ratio=0.5)
    with pytest.raises(ValueError, match="normalize_input"):
        config(max_norm_ratio=5.0, normalize_input=False)


# ---- exact resume and checkpoints ----


class Interrupted(RuntimeError):
    pass


def interrupted_at(batch_index: int):
    inner = synthetic_data(offset=0.3)

    def data(skip_batches: int) -> Iterator[ActivationBatch]:
        for index, batch in enumerate(inner(skip_batches), start=skip_batches):
            if index == batch_index:
                raise Interrupted(f"simulated crash before batch {index}")
            yield batch

    return data


def resumable_trainer(data, out: Path) -> Trainer:
    """A run whose dead-latent counters and AuxK matter: a third of the latents start dead."""
    cfg = config(steps=40, dead_tokens=3 * BATCH, checkpoint=CheckpointConfig(every_steps=10),
                 log=LogConfig(every_steps=3, progress=False))
    trainer = Trainer(cfg, data, out)
    with torch.no_grad():
        trainer.dictionary.W_enc[:, :32] *= 0.05
    return trainer


def test_resume_is_bitwise_identical(tmp_path: Path) -> None:
    straight = resumable_trainer(synthetic_data(offset=0.3), tmp_path / "a")
    straight.fit()
    assert straight.dead.dead_mask().any()  # the counters carried information across the crash

    crashed = resumable_trainer(interrupted_at(25), tmp_path / "b")
    with pytest.raises(Interrupted):
        crashed.fit()
    latest = json.loads((tmp_path / "b" / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 20
    resumed = Trainer.resume(tmp_path / "b", synthetic_data(offset=0.3))
    assert resumed.progress.step == 20
    resumed.fit()

    for name, tensor in straight.dictionary.state_dict().items():
        assert torch.equal(tensor, resumed.dictionary.state_dict()[name]), name
    assert torch.equal(straight.dead.tokens_since_fired, resumed.dead.tokens_since_fired)
    a_state = straight.optimizer.state_dict()["state"]
    b_state = resumed.optimizer.state_dict()["state"]
    for key in a_state:
        assert torch.equal(a_state[key]["exp_avg_sq"], b_state[key]["exp_avg_sq"])
    saved_a = (tmp_path / "a" / "weights.safetensors").read_bytes()
    assert saved_a == (tmp_path / "b" / "weights.safetensors").read_bytes()
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").open()]
    assert steps == sorted(set(steps)) and steps[-1] == 40


def test_checkpoints_are_pruned_and_a_started_run_is_not_overwritten(tmp_path: Path) -> None:
    cfg = config(steps=30, checkpoint=CheckpointConfig(every_steps=5, keep=2))
    Trainer(cfg, synthetic_data(), tmp_path).fit()
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert kept == ["step_000000025", "step_000000030"]
    with pytest.raises(FileExistsError, match="already holds a training run"):
        Trainer(cfg, synthetic_data(), tmp_path)


def test_truncated_checkpoint_is_refused(tmp_path: Path) -> None:
    Trainer(config(steps=10), synthetic_data(), tmp_path).fit()
    state = tmp_path / "checkpoints" / "step_000000010" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        Trainer.resume(tmp_path, synthetic_data())


def test_truncated_checkpoint_weights_are_refused(tmp_path: Path) -> None:
    Trainer(config(steps=10), synthetic_data(), tmp_path).fit()
    weights = tmp_path / "checkpoints" / "step_000000010" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        Trainer.resume(tmp_path, synthetic_data())


def test_resume_without_checkpoint_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume"):
        Trainer.resume(tmp_path, synthetic_data())


# ---- errors a user can cause ----


def test_nan_in_first_batch_is_refused_with_its_index() -> None:
    def data(skip_batches: int) -> Iterator[ActivationBatch]:
        batch = sparse_batch(0)
        batch.acts["h"][5, 3] = float("nan")
        yield batch

    with pytest.raises(ValueError, match=r"hookpoint 'h' in batch 0 .*NaN or inf"):
        Trainer(config(), data)


def test_nan_in_a_later_batch_is_refused_with_its_step(tmp_path: Path) -> None:
    def data(skip_batches: int) -> Iterator[ActivationBatch]:
        for index, batch in enumerate(synthetic_data()(skip_batches), start=skip_batches):
            if index == 7:
                batch.acts["h"][0, 0] = float("inf")
            yield batch

    trainer = Trainer(config(steps=20, checkpoint=CheckpointConfig(every_steps=5)), data,
                      tmp_path)
    with pytest.raises(ValueError, match=r"batch 7 \(training step 7\)"):
        trainer.fit()
    latest = json.loads((tmp_path / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 5  # the diverged state never replaced a good checkpoint


def test_divergence_is_told_apart_from_bad_inputs() -> None:
    trainer = Trainer(config(steps=20, optim=OptimConfig(lr=1e30, warmup=0.0)), synthetic_data())
    with pytest.raises(ValueError, match=r"loss became NaN/inf at step \d+ .* diverged"):
        trainer.fit()


def test_k_larger_than_width_is_refused() -> None:
    with pytest.raises(ValueError, match="k must be"):
        Trainer(config(n_latents=16, dictionary={"k": 32}), synthetic_data())


def test_unknown_dictionary_field_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown config field"):
        Trainer(config(dictionary={"kay": 4}), synthetic_data())


def test_width_mismatch_with_config_is_refused() -> None:
    with pytest.raises(ValueError, match="does not match the activations' width 16"):
        Trainer(config(dictionary={"k": 4, "d_in": 24}), synthetic_data())


def test_width_mismatch_on_resume_is_refused(tmp_path: Path) -> None:
    trainer = Trainer(config(steps=20, checkpoint=CheckpointConfig(every_steps=5)),
                      interrupted_at(8), tmp_path)
    with pytest.raises(Interrupted):
        trainer.fit()
    resumed = Trainer.resume(tmp_path, synthetic_data(width=12))
    with pytest.raises(ValueError, match="width 12 but the dictionary expects 16"):
        resumed.fit()


def test_missing_hookpoint_is_refused() -> None:
    with pytest.raises(ValueError, match=r"hookpoint 'resid.3' is not in the data"):
        Trainer(config(hookpoint="resid.3"), synthetic_data())


def test_requested_but_missing_logger_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ValueError, match="`wandb` package is not installed"):
        Trainer(config(log=LogConfig(wandb=True, progress=False)), synthetic_data())


@pytest.mark.parametrize("bad", [dict(n_tokens=0), dict(batch_size=10, n_tokens=5),
                                 dict(dictionary={"n_latents": 3}), dict(dead_tokens=-1)])
def test_bad_train_config_values_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        config(**bad)


def test_bad_optim_values_are_refused() -> None:
    with pytest.raises(ValueError, match="exceed the whole run"):
        OptimConfig(warmup=0.6, decay_fraction=0.5)
    with pytest.raises(ValueError, match="positive"):
        OptimConfig(lr=-1.0)


# ---- config and schedule details ----


def test_width_scaled_learning_rate() -> None:
    assert TrainConfig(n_latents=2**14).peak_lr() == pytest.approx(2e-4)
    assert TrainConfig(n_latents=2**16).peak_lr() == pytest.approx(1e-4)
    assert TrainConfig(n_latents=2**16, optim=OptimConfig(lr=3e-3)).peak_lr() == 3e-3


def test_dead_window_defaults() -> None:
    assert TrainConfig(n_tokens=10**9).dead_window == 10_000_000
    assert TrainConfig(n_tokens=10**6, batch_size=4096).dead_window == 100_000
    assert TrainConfig(n_tokens=10**6, dead_tokens=123).dead_window == 123


@pytest.mark.parametrize("decay", ["linear", "cosine"])
def test_schedule_warms_up_holds_and_decays(decay: str) -> None:
    cfg = OptimConfig(warmup=0.1, decay=decay, decay_fraction=0.2)
    factors = [lr_factor(step, 100, cfg) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == 1.0
    assert all(f == 1.0 for f in factors[10:80])
    assert factors[80] == pytest.approx(1.0)
    tail = factors[80:]
    assert all(a > b for a, b in zip(tail, tail[1:])) and 0 < tail[-1] < 0.06
    assert lr_factor(150, 100, cfg) == factors[-1]  # past the planned end: no negative lr
    constant = OptimConfig(warmup=0.0, decay="constant")
    assert {lr_factor(s, 100, constant) for s in range(100)} == {1.0}


def test_dictionary_option_parses_json_and_pairs() -> None:
    assert parse_mapping('{"k": 8}', "dictionary") == {"k": 8}
    assert parse_mapping("k=8,aux_coef=0.5,group_sizes=[4,4]", "dictionary") == {
        "k": 8, "aux_coef": 0.5, "group_sizes": [4, 4]}
    with pytest.raises(ValueError, match="key=value"):
        parse_mapping("k", "dictionary")


def test_config_round_trips_and_refuses_unknown_keys() -> None:
    cfg = config(optim=OptimConfig(lr=1e-3, decay="cosine"))
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown OptimConfig field"):
        TrainConfig.from_dict({"optim": {"learning_rate": 1.0}})


def test_a_run_ending_with_fvu_above_one_says_so_loudly(tmp_path: Path, capsys) -> None:
    """The trainer keeps the recent training FVU; a run that ends above 1 prints a WARNING and
    records it with the saved dictionary. Forced here by negating the reconstruction the loss
    sees (FVU ≈ ||x + x̂||² / var > 1); a healthy run records FVU < 1 and no warning."""
    good = Trainer(config(steps=30), synthetic_data(offset=0.3), tmp_path / "good")
    good.fit()
    summary = json.loads((tmp_path / "good" / "config.json").read_text())["training"]
    assert summary["fvu_above_one"] is False and summary["warnings"] == []
    assert 0 < summary["final_train_fvu"] < 1
    assert "WARNING" not in capsys.readouterr().err

    bad = Trainer(config(steps=5, optim=OptimConfig(lr=1e-12)), synthetic_data(offset=0.3),
                  tmp_path / "bad")
    original = bad.dictionary.training_loss

    def negated(*args, **kwargs):
        out = original(*args, **kwargs)
        out.recon = -out.recon
        return out

    bad.dictionary.training_loss = negated
    bad.fit()
    assert bad.recent_fvu > 1
    assert "WARNING: training FVU" in capsys.readouterr().err
    summary = json.loads((tmp_path / "bad" / "config.json").read_text())["training"]
    assert summary["fvu_above_one"] is True and "above 1" in summary["warnings"][0]


def test_the_end_of_run_fvu_reads_the_last_steps_not_the_start() -> None:
    """A short run starts far above FVU 1 (first steps) and ends below: the check reads the
    mean of the last quarter of the steps (at most 20), so it does not warn."""
    trainer = Trainer(config(steps=8), synthetic_data())
    assert math.isnan(trainer.recent_fvu)
    for value in (50.0, 20.0, 9.0, 4.0, 2.0, 1.5, 0.3, 0.2):
        trainer._fvu_ring[trainer._fvu_count % 20] = value
        trainer._fvu_count += 1
    assert trainer.recent_fvu == pytest.approx(0.25)
    assert trainer.fvu_warning() is None
    for _ in range(30):  # a long run: the last 20 steps only
        trainer._fvu_ring[trainer._fvu_count % 20] = 3.0
        trainer._fvu_count += 1
    assert trainer.recent_fvu == pytest.approx(3.0)
    assert "above 1" in trainer.fvu_warning()
