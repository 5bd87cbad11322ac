"""Several dictionaries trained from one stream: bit-equal to separate runs, exactly resumable
member by member, and the `sparselens train --sweep` options that describe them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sparselens.cli.main import main
from sparselens.training import CheckpointConfig, LogConfig, OptimConfig, TrainConfig, Trainer
from sparselens.training.sweep import expand_sweep, member_name
from sparselens.training.together import NonFiniteLoss, fit_together
from test_trainer import BATCH, Interrupted, config, interrupted_at, synthetic_data

pytestmark = pytest.mark.usefixtures("one_thread")


def members() -> list[TrainConfig]:
    """Different widths, k, learning rates, budgets and a variant that draws noise every step
    (so each member's RNG stream must be its own)."""
    return [config(steps=20),
            config(steps=14, architecture="variational"),
            config(steps=20, architecture="jumprelu", dictionary={}),
            config(steps=20, n_latents=64, dictionary={"k": 8}, optim=OptimConfig(lr=1e-2))]


def assert_same_run(a: Trainer, b: Trainer, folder_a: Path, folder_b: Path) -> None:
    for name, tensor in a.dictionary.state_dict().items():
        assert torch.equal(tensor, b.dictionary.state_dict()[name]), name
    assert torch.equal(a.dead.tokens_since_fired, b.dead.tokens_since_fired)
    state_a, state_b = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    for key in state_a:
        assert torch.equal(state_a[key]["exp_avg"], state_b[key]["exp_avg"])
    assert a.progress == b.progress
    assert ((folder_a / "weights.safetensors").read_bytes()
            == (folder_b / "weights.safetensors").read_bytes())
    records = [[{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"}
                for line in (folder / "metrics.jsonl").open()] for folder in (folder_a, folder_b)]
    assert records[0] == records[1]


def test_a_sweep_equals_separately_trained_dictionaries(tmp_path: Path) -> None:
    alone = []
    for i, cfg in enumerate(members()):
        trainer = Trainer(cfg, synthetic_data(offset=0.3), tmp_path / "alone" / str(i))
        trainer.fit()
        alone.append(trainer)
    data = synthetic_data(offset=0.3)
    together = [Trainer(cfg, data, tmp_path / "together" / str(i))
                for i, cfg in enumerate(members())]
    fit_together(together)
    assert together[1].progress.step == 14 and together[0].progress.step == 20
    for i, (a, b) in enumerate(zip(alone, together)):
        assert_same_run(a, b, tmp_path / "alone" / str(i), tmp_path / "together" / str(i))
    # and they did learn different things
    assert not torch.equal(together[0].dictionary.W_dec[:64], together[3].dictionary.W_dec)


def counting(inner):
    """A data factory that counts the batches it hands out."""
    served = []

    def data(skip_batches: int):
        for batch in inner(skip_batches):
            served.append(skip_batches)
            yield batch

    data.served = served  # type: ignore[attr-defined]
    return data


def test_the_stream_is_read_once(tmp_path: Path) -> None:
    data = counting(synthetic_data(offset=0.3))
    trainers = [Trainer(cfg, data) for cfg in members()[1:]]
    before = len(data.served)  # the three initialisation samples
    fit_together(trainers)
    assert len(data.served) - before == 20  # one read of 20 batches for all three


def resumable(cfgs_dir: Path, data, every: list[int]) -> list[Trainer]:
    cfgs = [config(steps=40, dead_tokens=3 * BATCH, checkpoint=CheckpointConfig(every_steps=e),
                   log=LogConfig(every_steps=3, progress=False), **extra)
            for e, extra in zip(every, ({}, {"n_latents": 64}, {"architecture": "variational"}))]
    trainers = [Trainer(cfg, data, cfgs_dir / str(i)) for i, cfg in enumerate(cfgs)]
    with torch.no_grad():
        for trainer in trainers:  # a third of the latents start dead: AuxK and counters matter
            trainer.dictionary.W_enc[:, :32] *= 0.05
    return trainers


def test_each_member_of_a_sweep_resumes_exactly(tmp_path: Path) -> None:
    every = [10, 7, 10]  # member 1's latest checkpoint (step 21) is ahead of the others' (20)
    straight = resumable(tmp_path / "a", synthetic_data(offset=0.3), every)
    fit_together(straight)

    crashed = resumable(tmp_path / "b", interrupted_at(25), every)
    with pytest.raises(Interrupted):
        fit_together(crashed)
    steps = [json.loads((tmp_path / "b" / str(i) / "checkpoints" / "latest.json").read_text())
             ["step"] for i in range(3)]
    assert steps == [20, 21, 20]
    data = synthetic_data(offset=0.3)
    resumed = [Trainer.resume(tmp_path / "b" / str(i), data) for i in range(3)]
    fit_together(resumed)
    for i in range(3):
        assert_same_run(straight[i], resumed[i], tmp_path / "a" / str(i), tmp_path / "b" / str(i))


def test_a_diverging_member_stops_alone(tmp_path: Path) -> None:
    data = synthetic_data(offset=0.3)
    cfgs = [config(steps=20, checkpoint=CheckpointConfig(every_steps=5)),
            config(steps=20, optim=OptimConfig(lr=1e30, warmup=0.0),
                   checkpoint=CheckpointConfig(every_steps=5))]
    trainers = [Trainer(cfg, data, tmp_path / name) for cfg, name in zip(cfgs, ("ok", "bad"))]
    with pytest.raises(NonFiniteLoss, match=r"bad: the loss became NaN/inf .*the other 1 finished"):
        fit_together(trainers)
    assert trainers[0].progress.step == 20 and (tmp_path / "ok" / "weights.safetensors").exists()
    assert trainers[1].progress.step < 20
    assert not (tmp_path / "bad" / "weights.safetensors").exists()


def test_trainers_that_cannot_share_a_stream_are_refused(tmp_path: Path) -> None:
    data = synthetic_data()
    with pytest.raises(ValueError, match="one data factory"):
        fit_together([Trainer(config(), data), Trainer(config(), synthetic_data())])
    with pytest.raises(ValueError, match="batch_size must be the same"):
        fit_together([Trainer(config(), data), Trainer(config(batch_size=64), data)])
    with pytest.raises(ValueError, match="same output folder"):
        fit_together([Trainer(config(), data, tmp_path), Trainer(config(), data, tmp_path)])


# ---- the sweep options ----


def test_grid_and_file_entries_expand_to_named_members(tmp_path: Path) -> None:
    base = config()
    grid = expand_sweep(base, ["n_latents=64,96", "k=2,4"])
    assert [m.name for m in grid] == ["k=2,n_latents=64", "k=4,n_latents=64",
                                      "k=2,n_latents=96", "k=4,n_latents=96"]
    assert grid[3].config.n_latents == 96 and grid[3].config.dictionary == {"k": 4}
    assert expand_sweep(base, ["dictionary.k=8"])[0].config.dictionary == {"k": 8}
    lrs = expand_sweep(base, ["optim.lr=1e-3,None"])
    assert [m.config.optim.lr for m in lrs] == [1e-3, None]
    listing = tmp_path / "sweep.yaml"
    listing.write_text("- {architecture: topk, k: 16}\n- {architecture: jumprelu}\n")
    (tmp_path / "sweep.json").write_text(json.dumps([{"architecture": "relu"}]))
    mixed = expand_sweep(config(dictionary={}), [str(listing), "n_latents=64,128"])
    assert [m.name for m in mixed][:2] == ["architecture=topk,k=16,n_latents=64",
                                          "architecture=topk,k=16,n_latents=128"]
    assert mixed[2].config.architecture == "jumprelu" and mixed[2].config.dictionary == {}
    assert expand_sweep(base, [str(tmp_path / "sweep.json")])[0].name == "architecture=relu"
    assert member_name({}) == "base"


@pytest.mark.parametrize(("entry", "message"), [
    ("batch_size=64,128", "batch_size cannot vary within a sweep"),
    ("seed=0,1", "seed cannot vary"),
    ("n_latents", "expected KEY=V1,V2"),
    ("optim.nope=1", "unknown option 'optim.nope'"),
    ("n_latents=0,64", "n_latents must be a positive integer"),
    ("missing.json", "does not exist"),
])
def test_bad_sweep_entries_say_what_is_wrong(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        expand_sweep(config(), [entry])


def test_an_option_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="set by two sweep entries"):
        expand_sweep(config(), ["k=2,4", "k=8"])


@pytest.fixture(scope="module")
def two_site_cache(tiny_llama, tmp_path_factory, make_chunks) -> Path:
    """resid.1 and resid.2 of the tiny Llama, stored in bfloat16."""
    from sparselens.data.harvest import HarvestConfig, harvest

    folder = tmp_path_factory.mktemp("sweep_cache") / "cache"
    harvest(tiny_llama, make_chunks(48), ["resid.1", "resid.2"], folder,
            HarvestConfig(batch_size=8, shard_tokens=128, heldout_fraction=0.1, progress=False))
    return folder


ARGS = ["--n-tokens", "640", "--batch-size", "64", "--init-tokens", "128", "--log.progress",
        "false", "--checkpoint.every-steps", "4", "--hookpoint", "resid.1"]


def test_sweep_from_the_command_line(two_site_cache: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    sweep = ["--sweep", "n_latents=32,64", "--sweep", "k=2,4", "--sweep",
             "hookpoint=resid.1,resid.2"]
    assert main(["train", str(two_site_cache), "--out", str(out), *ARGS, *sweep]) == 0
    names = [m["name"] for m in json.loads((out / "sweep.json").read_text())["members"]]
    assert len(names) == 8 and "hookpoint=resid.2,k=4,n_latents=64" in names
    for name in names:
        assert (out / name / "weights.safetensors").exists(), name
    # one member, trained alone with the same options, is the same dictionary bit for bit
    alone = tmp_path / "alone"
    assert main(["train", str(two_site_cache), "--out", str(alone), *ARGS, "--n-latents", "64",
                 "--dictionary", "k=4", "--hookpoint", "resid.2"]) == 0
    assert ((alone / "weights.safetensors").read_bytes()
            == (out / "hookpoint=resid.2,k=4,n_latents=64" / "weights.safetensors").read_bytes())
    # resuming a finished sweep is a no-op; a different sweep is refused
    assert main(["train", str(two_site_cache), "--out", str(out), "--resume", *ARGS,
                 *sweep]) == 0
    capsys.readouterr()
    assert main(["train", str(two_site_cache), "--out", str(out), "--resume", *ARGS,
                 "--sweep", "n_latents=32"]) == 1
    assert "different sweep" in capsys.readouterr().err


def test_autocast_none_is_float32_on_the_command_line(two_site_cache: Path,
                                                      tmp_path: Path) -> None:
    for spelling in ("None", "none", "float32"):
        out = tmp_path / spelling
        assert main(["train", str(two_site_cache), "--out", str(out), *ARGS, "--n-latents",
                     "32", "--dictionary", "k=2", "--autocast", spelling]) == 0
        assert json.loads((out / "train_config.json").read_text())["autocast"] == "float32"
    assert TrainConfig(autocast=None).autocast == "float32"
    assert TrainConfig(autocast="BF16").autocast == "bfloat16"
    with pytest.raises(ValueError, match="autocast must be one of .*'float64'"):
        TrainConfig(autocast="float64")


def test_batches_reach_the_device_in_their_stored_dtype_and_are_cast_once(
        two_site_cache: Path) -> None:
    from sparselens.data.cache import ActivationCache
    from sparselens.data.factory import training_data
    from sparselens.data.sites import Sites
    from sparselens.training.device_batch import DeviceBatch

    cache = ActivationCache.open(two_site_cache)
    cfg = config(hookpoint="resid.1", batch_size=64, n_tokens=640)
    batch = next(training_data(cache, Sites.from_cache(cache, cfg), 64)(0))
    assert batch.acts["resid.1"].dtype == torch.bfloat16  # no float32 copy on the host
    shared = DeviceBatch(batch, torch.device("cpu"))
    x = shared.acts("resid.1", torch.float32)
    assert x.dtype == torch.float32 and shared.acts("resid.1", torch.float32) is x
    assert torch.equal(x, batch.acts["resid.1"].float())
