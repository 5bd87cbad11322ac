"""The explain pipeline on latents of known meaning with a scripted judge: splits, prompts,
parsing, scores and baselines, bad input, resume without regenerating anything."""

from __future__ import annotations

import json

import pytest

from explain_helpers import ScriptedJudge, rule_store
from sparselens.interpretation.contexts import ContextReader
from sparselens.interpretation.explain import (
    RECORDS_FILE,
    ExplainConfig,
    explain_latents,
    parse_latents,
)
from sparselens.interpretation.explainer import (
    SHORT_QUESTION,
    ExplainerConfig,
    ExplanationParseError,
    explanation_request,
    parse_explanation,
)
from sparselens.interpretation.llm.cache import CachedClient

SCORERS = ("detection", "fuzzing", "intruder")


def test_explainer_sees_only_train_and_scorers_only_test():
    examples, reader = rule_store()
    for latent in (0, 1, 3):
        train = reader.contexts(latent, "top", "train")
        test = reader.activating(latent, "test", 50) + reader.contexts(latent, "random", "test")
        assert train and test
        assert not {c.seq for c in train} & {c.seq for c in test}
        assert examples.split.is_test(__import__("torch").tensor([c.seq for c in test])).all()
    quiet = reader.contexts(1, "random", "all")
    assert quiet and all(not any(ch.isdigit() for ch in c.text) for c in quiet)


def test_prompt_marks_activating_tokens_with_levels():
    _, reader = rule_store()
    request = explanation_request(reader.contexts(1, "top", "train", limit=3), [],
                                  ExplainerConfig(style="delphi"))
    user = request.messages[-1][1]
    assert "<<" in user and "Activations:" in user and "(10)" in user
    assert "[EXPLANATION]:" in request.messages[0][1]


def test_short_prompt_shows_worked_answers_and_only_the_marked_texts():
    _, reader = rule_store()
    shown = reader.contexts(1, "top", "train", limit=3)
    request = explanation_request(shown, [], ExplainerConfig())
    roles = [role for role, _ in request.messages]
    # system, four worked examples (question, answer), then the latent's texts
    assert roles == ["system"] + ["user", "assistant"] * 4 + ["user"]
    user = request.messages[-1][1]
    assert user.count("Example ") == len(shown) and "<<" in user
    assert "Most frequent" not in user and "Activations" not in user
    assert request.max_tokens == 32


def test_short_answers_keep_their_first_line():
    assert parse_explanation("digits in dates\nExample 4: more", first_line=True) == \
        "digits in dates"
    with pytest.raises(ExplanationParseError):
        parse_explanation("digits in dates\nExample 4: more")


@pytest.mark.parametrize("answer, expected", [
    ("Some reasoning\n[EXPLANATION]: Days of the week.", "Days of the week"),
    ("**Explanation:** \"closing brackets\"", "closing brackets"),
    ("explanation -\n  numbers in dates", "numbers in dates"),
    ("the word import", "the word import"),
    ("[EXPLANATION]: first\nmore thinking\n[EXPLANATION]: second", "second"),
])
def test_parse_explanation_tolerates_formats(answer, expected):
    assert parse_explanation(answer) == expected


def test_parse_explanation_refuses_rambling():
    with pytest.raises(ExplanationParseError):
        parse_explanation("I looked at it.\nIt is hard to say.\n" + "word " * 40)
    with pytest.raises(ExplanationParseError):
        parse_explanation("[EXPLANATION]: <your explanation>")


def test_parse_latents():
    assert parse_latents("0:3,7", 10) == (0, 1, 2, 7)
    with pytest.raises(ValueError, match="0..9"):
        parse_latents("8:12", 10)
    with pytest.raises(ValueError, match="START:STOP"):
        parse_latents("a:b", 10)


def test_known_latents_are_named_and_beat_both_baselines(tmp_path):
    examples, reader = rule_store()
    cfg = ExplainConfig(latents=(0, 1, 2, 3, 4), scorers=SCORERS)
    result = explain_latents(examples, reader, ScriptedJudge(), cfg, tmp_path, progress=False)
    records = result.records
    assert records[2]["status"] == "dead"
    assert records[1]["explanation"] == "the character digit"
    assert records[0]["explanation"] == "the character c"
    # the space latent fires in every window: no quiet test context, so no detection score
    assert records[3]["n_test"]["quiet"] == 0
    assert records[3]["scores"]["detection"]["explanation"]["value"] is None
    for j in (0, 1, 4):
        record = records[j]
        assert record["prompt"]["template"] == cfg.explainer.template()
        det = record["scores"]["detection"]
        assert det["explanation"]["value"] == 1.0
        assert det["empty"]["value"] == 0.5
        assert record["random_source"] in (0, 1, 3, 4) and record["random_source"] != j
    summary = json.loads((tmp_path / "summary.json").read_text())
    margin = summary["scorers"]["detection"]["margin_over_random"]
    assert margin["mean"] > 0.2 and margin["low"] > 0
    assert summary["status"] == {"ok": 4, "dead": 1}
    assert summary["scorers"]["intruder"]["chance"] == pytest.approx(0.2)
    lines = (tmp_path / RECORDS_FILE).read_text().splitlines()
    assert [json.loads(line)["latent"] for line in lines] == [0, 1, 2, 3, 4]


def test_failures_are_recorded_the_run_goes_on_and_a_rerun_retries_them(tmp_path):
    examples, reader = rule_store()
    cfg = ExplainConfig(latents=(0, 1, 3), scorers=("detection",))
    first = explain_latents(examples, reader, ScriptedJudge(fail_latent_token="c",
                            garble_token="␣"), cfg, tmp_path, progress=False)
    status = {j: r["status"] for j, r in first.records.items()}
    assert status == {0: "llm_error", 1: "ok", 3: "unparsable"}
    assert "scripted outage" in first.records[0]["error"]
    assert "no explanation found" in first.records[3]["error"]
    assert first.records[3]["answer"].startswith("I am not sure")
    again = CachedClient(ScriptedJudge(), tmp_path / "llm_cache")
    second = explain_latents(examples, reader, again, cfg, tmp_path, progress=False)
    # the outage is retried; the garbled answer (and its follow-up) are valid responses of a
    # deterministic model, answered from the cache: the same text, still unparsable
    assert {j: r["status"] for j, r in second.records.items()} == \
        {0: "ok", 1: "ok", 3: "unparsable"}
    assert second.records[1] == first.records[1]  # finished: not touched
    assert again.hits >= 2 and again.misses > 0


def test_an_unparsable_answer_gets_one_follow_up_turn(tmp_path):
    examples, reader = rule_store()

    class Rambler(ScriptedJudge):
        def answer(self, prompt, messages=()):
            if prompt.endswith(SHORT_QUESTION):
                return __import__("sparselens.interpretation.llm.base", fromlist=["x"]
                                  ).ChatResponse(
                    text="Let me think step by step about what all of these examples "
                         "share.\nHmm, many.")
            return super().answer(prompt, messages)

        def complete(self, requests, on_result=None):
            out = []
            for i, request in enumerate(requests):
                last = request.messages[-1][1]
                result = (ChatResponse(text="[EXPLANATION]: digits")
                          if last.startswith("Your answer") else self.answer(last))
                out.append(result)
                if on_result:
                    on_result(i, result)
            return out

    from sparselens.interpretation.llm.base import ChatResponse

    result = explain_latents(examples, reader, Rambler(), ExplainConfig(latents=(1,),
                             scorers=("detection",)), tmp_path, progress=False)
    assert result.records[1]["explanation"] == "digits"
    assert result.records[1]["answer"].startswith("Let me think")


def test_interrupted_run_resumes_without_regenerating(tmp_path):
    examples, reader = rule_store()
    cfg = ExplainConfig(latents=(0, 1, 3, 4), scorers=SCORERS)
    with pytest.raises(KeyboardInterrupt):
        explain_latents(examples, reader, ScriptedJudge(interrupt_after=40), cfg, tmp_path,
                        progress=False)
    cached_before = len(list((tmp_path / "llm_cache").rglob("*.json")))
    assert cached_before == 40
    resumed = CachedClient(ScriptedJudge(), tmp_path / "llm_cache")
    result = explain_latents(examples, reader, resumed, cfg, tmp_path, progress=False)
    total = len(list((tmp_path / "llm_cache").rglob("*.json")))
    assert resumed.misses == total - cached_before  # every new request is a new answer
    assert all(r["status"] == "ok" for r in result.records.values())
    # a run from scratch over the same cache asks nothing at all
    (tmp_path / RECORDS_FILE).unlink()
    fresh = CachedClient(ScriptedJudge(interrupt_after=0), tmp_path / "llm_cache")
    again = explain_latents(examples, reader, fresh, cfg, tmp_path, progress=False)
    assert fresh.misses == 0 and fresh.hits >= total
    assert again.summary["scorers"] == result.summary["scorers"]


def test_a_narrower_view_crops_contexts_around_the_same_token():
    examples, reader = rule_store()
    narrow = ContextReader(examples, reader.tokenizer, view=(3, 1))
    wide, small = reader.contexts(1, "top", "all"), narrow.contexts(1, "top", "all")
    assert [(c.seq, c.pos) for c in wide] == [(c.seq, c.pos) for c in small]
    for big, little in zip(wide, small):
        assert len(little.tokens) <= 5 and little.text in big.text
        at_big, at_little = big.pos - max(0, big.pos - 12), big.pos - max(0, big.pos - 3)
        assert little.activations[at_little] == big.activations[at_big] > 0
    with pytest.raises(ValueError, match="outside the store's window"):
        ContextReader(examples, reader.tokenizer, view=(30, 1))
