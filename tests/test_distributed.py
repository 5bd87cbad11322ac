"""Data-parallel training: two gloo processes on 127.0.0.1 against one process.

The two-rank run must match the single-process run on the same global batches up to
floating-point reduction order: each rank's GEMMs sum over half the rows, and the all-reduce
adds the two halves, while one process sums all rows in its own blocked order. So weights
agree to ~1e-6 relative, not bitwise. A resumed two-rank run, whose reductions happen in the
same order as the uninterrupted one, must match it bitwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from conftest import free_port, join_as_rank
from sparselens import distributed as group
from sparselens.data.batch import ActivationBatch
from sparselens.training import CheckpointConfig, LogConfig, OptimConfig, TrainConfig, Trainer
from sparselens.training import distributed as dp

D_IN, BATCH, STEPS, WORLD = 8, 64, 6, 2
RELATIVE_TOLERANCE = 1e-5


def batch(index: int) -> ActivationBatch:
    """Global batch `index`: sparse non-negative mixtures of fixed random directions."""
    atoms = torch.randn(24, D_IN, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1000 + index)
    codes = torch.rand(BATCH, 24, generator=gen) * (torch.rand(BATCH, 24, generator=gen) < 0.15)
    rows = torch.arange(BATCH) + index * BATCH
    return ActivationBatch(acts={"h": codes @ atoms + 0.3}, token_ids=rows, seq_ids=rows,
                           positions=rows)


def data(skip_batches: int) -> Iterator[ActivationBatch]:
    index = skip_batches
    while True:
        yield batch(index)
        index += 1


def config() -> TrainConfig:
    # aux_coef=0: AuxK normalises by the *local* batch's residual variance, which is not a mean
    # over tokens, so it is the one term whose distributed gradient differs by design. The
    # small dead window still exercises the synchronised dead-latent counters.
    return TrainConfig(n_latents=96, dictionary={"k": 3, "aux_coef": 0.0}, n_tokens=BATCH * STEPS,
                       batch_size=BATCH, init_tokens=2 * BATCH, dead_tokens=BATCH,
                       autocast="float32",  # spawned ranks do not see conftest's fixtures
                       optim=OptimConfig(lr=5e-3, warmup=0.2),
                       checkpoint=CheckpointConfig(every_steps=2, keep=10),
                       log=LogConfig(every_steps=2, progress=False))


def final_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    state = {k: v.detach().clone() for k, v in trainer.dictionary.state_dict().items()}
    state["tokens_since_fired"] = trainer.dead.tokens_since_fired.clone()
    state["tokens_seen"] = torch.tensor(trainer.progress.tokens_seen)
    return state


def worker(rank: int, port: int, tmp: Path) -> None:
    """One rank: a full run, then a resume from its step-2 checkpoint into another folder."""
    join_as_rank(rank, WORLD, port)
    with group.distributed_session("cpu"):
        full = Trainer(config(), data, tmp / "dist")
        full.fit()
        torch.save(final_state(full), tmp / f"full_rank{rank}.pt")
        resumed = Trainer.resume(tmp / "dist" / "checkpoints" / "step_000000002", data,
                                 tmp / "resumed")
        resumed.fit()
        torch.save(final_state(resumed), tmp / f"resumed_rank{rank}.pt")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("distributed")
    mp.spawn(worker, args=(free_port(), tmp), nprocs=WORLD, join=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = Trainer(config(), data, tmp / "single")
        single.fit()
    finally:
        torch.set_num_threads(threads)
    torch.save(final_state(single), tmp / "single.pt")
    return tmp


def load(tmp: Path, name: str) -> dict[str, torch.Tensor]:
    return torch.load(tmp / name, weights_only=True)


def test_two_ranks_match_one_process(runs: Path) -> None:
    single, dist = load(runs, "single.pt"), load(runs, "full_rank0.pt")
    assert int(dist["tokens_seen"]) == BATCH * STEPS  # global tokens, not one rank's share
    assert torch.equal(dist["tokens_since_fired"], single["tokens_since_fired"])
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        scale = single[name].abs().max()
        diff = (dist[name] - single[name]).abs().max()
        assert diff <= RELATIVE_TOLERANCE * scale, f"{name}: max |diff| {diff} vs scale {scale}"
    # and training really moved the weights (the comparison is not between two inits)
    early = torch.load(runs / "dist" / "checkpoints" / "step_000000002" / "trainer_state.pt",
                      weights_only=True)["module"]["W_enc"]
    assert not torch.allclose(early, dist["W_enc"])


def test_ranks_hold_identical_state(runs: Path) -> None:
    rank0, rank1 = load(runs, "full_rank0.pt"), load(runs, "full_rank1.pt")
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name


def test_distributed_resume_is_exact(runs: Path) -> None:
    full, resumed = load(runs, "full_rank0.pt"), load(runs, "resumed_rank0.pt")
    for name in full:
        assert torch.equal(full[name], resumed[name]), name


def test_only_rank_zero_writes(runs: Path) -> None:
    out = runs / "dist"
    steps = sorted(p.name for p in (out / "checkpoints").iterdir() if p.is_dir())
    assert steps == ["step_000000002", "step_000000004", "step_000000006"]
    assert not list((out / "checkpoints").glob(".*tmp*"))
    records = (out / "metrics.jsonl").read_text().splitlines()
    assert len(records) == STEPS // 2  # one writer: no duplicated records
    assert (out / "weights.safetensors").exists()


# ---- single-process behaviour of the helpers (no process group) ----

def test_single_process_helpers_are_identity() -> None:
    batches = data(0)
    assert dp.shard_batches(batches) is batches
    assert group.world_size() == 1 and group.rank() == 0 and group.is_main_process()
    assert dp.global_rows(7) == 7
    dp.require_even_split(7)
    fired = torch.tensor([True, False])
    assert dp.fired_on_any_rank(fired) is fired


def test_rank_shards_partition_the_global_batch() -> None:
    whole = batch(3)
    parts = [dp._rows_of_rank(whole, 0, r, 4) for r in range(4)]
    assert all(len(p) == BATCH // 4 for p in parts)
    rebuilt = torch.stack([p.acts["h"] for p in parts], dim=1).reshape(BATCH, D_IN)
    assert torch.equal(rebuilt, whole.acts["h"])
    assert sorted(torch.cat([p.token_ids for p in parts]).tolist()) == whole.token_ids.tolist()


def test_uneven_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="split evenly over 3"):
        dp._rows_of_rank(batch(0), 0, 0, 3)


def test_torchrun_environment_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert group.init_distributed("cpu") is False  # not launched by torchrun: nothing to join
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="torchrun"):
        group.init_distributed("cpu")


def test_backend_follows_the_device() -> None:
    assert group.backend_for("cpu") == "gloo"
    assert group.backend_for("cuda:1") == "nccl"
