"""The example store against a brute-force dense computation on random data."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sparselens.data.batch import ActivationBatch
from sparselens.dictionaries import REGISTRY, Dictionary, build
from sparselens.interpretation.examples import (
    FeatureExamples,
    collect_examples,
    firing_hash,
    top_per_group,
)
from sparselens.interpretation.windows import collect_windows

HOOK = "resid.1"
D_IN, N_LATENTS = 8, 48


def tiny_dictionary(architecture: str = "topk", seed: int = 0) -> Dictionary:
    """A small dictionary of any registered variant, with random (not trained) weights."""
    torch.manual_seed(seed)
    fields = {f.name for f in dataclasses.fields(REGISTRY[architecture].config_class)}
    extra: dict = {"k": 4} if "k" in fields else {}
    if "group_sizes" in fields:
        extra["group_sizes"] = [16, 32]
    dictionary = build(architecture, d_in=D_IN, n_latents=N_LATENTS, **extra)
    if hasattr(dictionary, "b_enc"):
        with torch.no_grad():
            dictionary.b_enc.normal_(0, 0.3)  # spread firing rates, make some latents rare
    return dictionary.eval()


def random_data(n_seqs: int, length: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n_seqs, length, D_IN, generator=gen)


def shuffled_batches(x: torch.Tensor, batch_size: int, seed: int = 0) -> list[ActivationBatch]:
    """Every (sequence, position) row once, in a random order, in uneven batches."""
    n_seqs, length, _ = x.shape
    seq = torch.arange(n_seqs).repeat_interleave(length)
    pos = torch.arange(length).repeat(n_seqs)
    order = torch.randperm(n_seqs * length, generator=torch.Generator().manual_seed(seed))
    flat = x.reshape(-1, D_IN)
    return [ActivationBatch(acts={HOOK: flat[idx]}, token_ids=torch.zeros(len(idx)).long(),
                            seq_ids=seq[idx], positions=pos[idx])
            for idx in order.split(batch_size)]


@torch.no_grad()
def dense_codes(dictionary: Dictionary, x: torch.Tensor) -> torch.Tensor:
    return dictionary.encode(x.reshape(-1, D_IN)).reshape(*x.shape[:2], -1)


def slot_keys(seq: torch.Tensor, pos: torch.Tensor) -> set[tuple[int, int]]:
    return {(s, p) for s, p in zip(seq.tolist(), pos.tolist()) if s >= 0}


@pytest.mark.parametrize("architecture", sorted(REGISTRY))
def test_top_examples_and_counts_match_brute_force(architecture):
    if architecture == "mlsae":
        pytest.skip("mlsae codes are per (token, layer); the example store reads one "
                    "hookpoint's rows (use MultiLayerSAE.encode_layer for one layer)")
    dictionary = tiny_dictionary(architecture)
    x = random_data(12, 25)
    codes = dense_codes(dictionary, x)
    n_top = 5
    examples = collect_examples(dictionary, shuffled_batches(x, 37), HOOK, n_top=n_top,
                                n_quantile_samples=6)
    flat = codes.reshape(-1, N_LATENTS)
    assert examples.n_tokens == flat.shape[0]
    assert torch.equal(examples.counts, (flat != 0).sum(0))
    torch.testing.assert_close(examples.activation_sums, flat.double().sum(0))
    assert examples.counts.min() < examples.counts.max()  # the data exercises rare features
    length = x.shape[1]
    for f in range(N_LATENTS):
        firing = torch.nonzero(flat[:, f]).squeeze(1)
        want = firing[flat[firing, f].argsort(descending=True)[:n_top]]
        got = examples.top
        assert slot_keys(got.seq_ids[f], got.positions[f]) == {
            (r // length, r % length) for r in want.tolist()}, f"feature {f}"
        valid = got.valid[f]
        torch.testing.assert_close(got.activations[f][valid], flat[want, f])
        assert torch.equal(got.activations[f][~valid], torch.zeros(int((~valid).sum())))


def test_samples_are_the_hash_sketch_and_ignore_batching():
    """The sample is the firings with the largest hash: a uniform sample fixed by the data,
    identical whatever the batch size or order."""
    dictionary = tiny_dictionary("relu")
    x = random_data(10, 30)
    codes = dense_codes(dictionary, x)
    n_samples = 7
    a = collect_examples(dictionary, shuffled_batches(x, 13, seed=1), HOOK, n_top=2,
                         n_quantile_samples=n_samples, seed=5)
    b = collect_examples(dictionary, shuffled_batches(x, 64, seed=2), HOOK, n_top=2,
                         n_quantile_samples=n_samples, seed=5)
    assert torch.equal(a.samples.seq_ids, b.samples.seq_ids)
    assert torch.equal(a.samples.positions, b.samples.positions)
    seq, pos, feat = torch.nonzero(codes, as_tuple=True)
    scores = firing_hash(seq, pos, feat, seed=5)
    for f in range(N_LATENTS):
        mine = feat == f
        best = scores[mine].argsort(descending=True)[:n_samples]
        want = set(zip(seq[mine][best].tolist(), pos[mine][best].tolist()))
        assert slot_keys(a.samples.seq_ids[f], a.samples.positions[f]) == want
        acts = a.samples.activations[f][a.samples.valid[f]]
        assert torch.all(acts[1:] >= acts[:-1])  # ascending, for quantile bins
        torch.testing.assert_close(acts.sort().values, codes[seq[mine][best], pos[mine][best],
                                                             f].sort().values)


def test_sample_is_roughly_uniform_over_firings():
    """A feature firing on every token: sampled positions spread over the whole range."""
    positions = torch.arange(4000)
    seq = torch.zeros_like(positions)
    scores = firing_hash(seq, positions, torch.zeros_like(positions), seed=0)
    chosen = positions[scores.argsort(descending=True)[:400]].float()
    assert abs(chosen.mean().item() - 2000) < 200
    assert 0.2 < (chosen < 1000).float().mean().item() < 0.3


def test_quantile_bins_split_each_sample_into_equal_counts():
    dictionary = tiny_dictionary("relu")
    examples = collect_examples(dictionary, shuffled_batches(random_data(8, 30), 50), HOOK,
                                n_top=3, n_quantile_samples=10)
    bins = examples.quantile_bins(5)
    valid = examples.samples.valid
    assert torch.equal(bins < 0, ~valid)
    full = valid.all(1)
    assert full.any()
    for f in torch.nonzero(full).squeeze(1).tolist():
        assert bins[f].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    with pytest.raises(ValueError, match="n_bins"):
        examples.quantile_bins(0)


def test_windows_hold_the_feature_on_neighbouring_tokens():
    dictionary = tiny_dictionary("topk")
    x = random_data(9, 20)
    codes = dense_codes(dictionary, x)
    examples = collect_examples(dictionary, shuffled_batches(x, 31), HOOK, n_top=4,
                                n_quantile_samples=4)
    before, after = 5, 3
    examples = collect_windows(dictionary, examples, shuffled_batches(x, 17, seed=3),
                               before=before, after=after)
    assert examples.window == (before, after)
    for part in (examples.top, examples.samples):
        assert part.windows is not None
        assert part.windows.shape == (*part.seq_ids.shape, before + 1 + after)
        for f, j in torch.nonzero(part.valid).tolist():
            s, p = int(part.seq_ids[f, j]), int(part.positions[f, j])
            want = torch.zeros(before + 1 + after)
            lo, hi = max(0, p - before), min(x.shape[1], p + after + 1)
            want[lo - (p - before):hi - (p - before)] = codes[s, lo:hi, f]
            torch.testing.assert_close(part.windows[f, j], want)
        # the windows come from other batches than the top activations: a BLAS may round the
        # same row differently in a GEMM of another height (seen with MKL on AMD EPYC)
        torch.testing.assert_close(part.windows[..., before][part.valid],
                                   part.activations[part.valid])


def test_memory_does_not_grow_with_the_data():
    dictionary = tiny_dictionary("relu")

    def footprint(examples: FeatureExamples) -> list[tuple[int, ...]]:
        tensors = [examples.counts, examples.activation_sums]
        for part in (examples.top, examples.samples):
            tensors += [part.seq_ids, part.positions, part.activations]
        return [tuple(t.shape) for t in tensors]

    small = collect_examples(dictionary, shuffled_batches(random_data(4, 25), 40), HOOK,
                             n_top=6, n_quantile_samples=9)
    large = collect_examples(dictionary, shuffled_batches(random_data(80, 25), 40), HOOK,
                             n_top=6, n_quantile_samples=9)
    assert large.n_tokens == 20 * small.n_tokens
    assert footprint(small) == footprint(large)
    assert footprint(small)[2] == (N_LATENTS, 6) and footprint(small)[5] == (N_LATENTS, 9)


def test_top_per_group_ranks_within_each_group():
    groups = torch.tensor([2, 0, 2, 2, 0, 1])
    scores = torch.tensor([0.5, 0.1, 0.9, 0.7, 0.3, 0.2])
    keep, rank = top_per_group(groups, scores, k=2, n_groups=3)
    got = sorted(zip(groups[keep].tolist(), rank.tolist(), scores[keep].tolist()))
    assert got == [(0, 0, pytest.approx(0.3)), (0, 1, pytest.approx(0.1)),
                   (1, 0, pytest.approx(0.2)), (2, 0, pytest.approx(0.9)),
                   (2, 1, pytest.approx(0.7))]


def test_save_and_load_round_trip(tmp_path):
    dictionary = tiny_dictionary("topk")
    x = random_data(5, 12)
    examples = collect_examples(dictionary, shuffled_batches(x, 16), HOOK, n_top=3,
                                n_quantile_samples=4)
    examples = collect_windows(dictionary, examples, shuffled_batches(x, 16), before=2, after=1)
    examples.save(tmp_path)
    loaded = FeatureExamples.load(tmp_path)
    assert loaded.hookpoint == HOOK and loaded.n_tokens == examples.n_tokens
    assert loaded.window == (2, 1)
    for name in ("top", "samples"):
        for field in ("seq_ids", "positions", "activations", "windows"):
            assert torch.equal(getattr(getattr(loaded, name), field),
                               getattr(getattr(examples, name), field))
    file = tmp_path / "examples.safetensors"
    file.write_bytes(file.read_bytes()[:-100])  # truncated
    with pytest.raises(ValueError, match="not a valid example store"):
        FeatureExamples.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="collect examples first"):
        FeatureExamples.load(tmp_path / "missing")


def test_user_errors_say_what_is_wrong():
    dictionary = tiny_dictionary("topk")
    batches = shuffled_batches(random_data(2, 5), 4)
    with pytest.raises(ValueError, match="no activations for hookpoint 'other'"):
        collect_examples(dictionary, batches, "other")
    wide = [ActivationBatch({HOOK: torch.randn(3, D_IN + 1)}, *[torch.zeros(3).long()] * 3)]
    with pytest.raises(ValueError, match="width 9 but the dictionary expects 8"):
        collect_examples(dictionary, wide, HOOK)
    bad = torch.randn(3, D_IN)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        collect_examples(dictionary, [ActivationBatch({HOOK: bad}, *[torch.zeros(3).long()] * 3)],
                         HOOK)
    with pytest.raises(ValueError, match="batches were empty"):
        collect_examples(dictionary, [], HOOK)
    with pytest.raises(ValueError, match="n_top"):
        collect_examples(dictionary, batches, HOOK, n_top=0)
    examples = collect_examples(dictionary, batches, HOOK)
    with pytest.raises(ValueError, match="window sizes"):
        collect_windows(dictionary, examples, batches, before=-1)


def test_random_examples_never_fire_and_are_spread_over_the_pool():
    dictionary = tiny_dictionary("topk")
    x = random_data(20, 12)
    codes = dense_codes(dictionary, x)
    examples = collect_examples(dictionary, shuffled_batches(x, 37), HOOK, n_random=6,
                                pool_size=64)
    rnd = examples.random
    assert rnd is not None and rnd.seq_ids.shape == (N_LATENTS, 6)
    valid = rnd.valid
    assert valid.float().mean() > 0.9  # k=4 of 48: almost every latent finds 6 quiet tokens
    values = codes[rnd.seq_ids.clamp_min(0), rnd.positions.clamp_min(0)]
    on_latent = values.gather(-1, torch.arange(N_LATENTS)[:, None, None].expand(-1, 6, 1))
    assert (on_latent.squeeze(-1)[valid] == 0).all()
    # different latents start at different places in the pool
    assert len({tuple(r) for r in rnd.seq_ids.tolist()}) > N_LATENTS // 2
    # the choice does not depend on batching
    again = collect_examples(dictionary, shuffled_batches(x, 101, seed=3), HOOK, n_random=6,
                             pool_size=64)
    assert torch.equal(again.random.seq_ids, rnd.seq_ids)
    assert torch.equal(again.random.positions, rnd.positions)


def test_histograms_count_every_firing_and_split_is_by_sequence(tmp_path):
    dictionary = tiny_dictionary("relu")
    x = random_data(16, 10)
    codes = dense_codes(dictionary, x).reshape(-1, N_LATENTS)
    examples = collect_examples(dictionary, shuffled_batches(x, 23), HOOK)
    assert torch.equal(examples.histogram.sum(1), (codes != 0).sum(0))
    j = int((codes != 0).sum(0).argmax())
    values = codes[:, j][codes[:, j] != 0].abs().double()
    from sparselens.interpretation.examples import HISTOGRAM_EDGES
    expected = torch.bincount(torch.bucketize(values, HISTOGRAM_EDGES, right=True),
                              minlength=HISTOGRAM_EDGES.numel() + 1)
    assert torch.equal(examples.histogram[j], expected)
    test = examples.split.is_test(torch.arange(16))
    assert 0 < int(test.sum()) < 16
    assert examples.split.is_test(torch.tensor([-1])).item() is False
    examples.save(tmp_path)
    import json
    meta = json.loads((tmp_path / "examples.json").read_text())
    assert meta["split"]["unit"] == "sequence" and meta["split"]["test_fraction"] == 0.5
    loaded = FeatureExamples.load(tmp_path)
    assert torch.equal(loaded.histogram, examples.histogram)
    assert torch.equal(loaded.random.seq_ids, examples.random.seq_ids)
    assert loaded.split == examples.split


def test_random_windows_are_filled_by_the_second_pass():
    dictionary = tiny_dictionary("topk")
    x = random_data(10, 12)
    codes = dense_codes(dictionary, x)
    examples = collect_examples(dictionary, shuffled_batches(x, 29), HOOK, n_random=4,
                                pool_size=40)
    examples = collect_windows(dictionary, examples, shuffled_batches(x, 31), before=3, after=2)
    rnd = examples.random
    j, slot = 5, 0
    s, p = int(rnd.seq_ids[j, slot]), int(rnd.positions[j, slot])
    for offset in range(-3, 3):
        q = p + offset
        expected = float(codes[s, q, j]) if 0 <= q < 12 else 0.0
        assert rnd.windows[j, slot, offset + 3].item() == pytest.approx(expected, abs=1e-6)
