"""The short explainer prompt's token hint and the fuzzing judge's list of marked tokens."""

from __future__ import annotations

from sparselens.interpretation.contexts import Context
from sparselens.interpretation.explainer import (
    SHORT_QUESTION,
    ExplainerConfig,
    explanation_request,
    token_hint,
)
from sparselens.interpretation.scoring.classify import _request


def _context(tokens: tuple[str, ...], firing: int) -> Context:
    acts = tuple(1.0 if i == firing else 0.0 for i in range(len(tokens)))
    return Context(tokens, acts, 0, firing, "top")


def test_token_hint_only_when_one_token_dominates() -> None:
    assert token_hint(["self", " self", "self ", "x"]) == "Marked tokens: 'self' x3, 'x' x1"
    assert token_hint(["$", "€", "£"]) is None  # no token has half of the marks
    assert token_hint(["a", "b"]) == "Marked tokens: 'a' x1, 'b' x1"  # exactly half
    assert token_hint([]) is None
    assert token_hint([" ", "\n", " "]) == "Marked tokens: '␣' x2, '\\n' x1"


def test_short_prompt_names_a_single_token_feature_but_not_a_mixed_one() -> None:
    selfish = [_context(("def", " f", "(", " self", ")"), 3)] * 3
    mixed = [_context(("a", " cat", " sat"), 1), _context(("a", " dog", " ran"), 1),
             _context(("the", " cow", " ate"), 1)]
    last = explanation_request(selfish, [], ExplainerConfig()).messages[-1][1]
    assert "Marked tokens: 'self' x3" in last and last.endswith(SHORT_QUESTION)
    assert "Marked tokens" not in explanation_request(mixed, [], ExplainerConfig()).messages[-1][1]
    off = explanation_request(selfish, [], ExplainerConfig(token_hint=False))
    assert all("Marked tokens" not in m for _, m in off.messages)
    # The worked answers show the hint the same way: one with it, the currency one without.
    shots = [m for role, m in explanation_request(selfish, [], ExplainerConfig()).messages[1:-1]
             if role == "user"]
    assert ["Marked tokens" in m for m in shots] == [True, True, False, True]


def test_fuzzing_lists_the_marks_after_the_text_and_detection_does_not() -> None:
    fuzz = _request("fuzzing", "break statements", "while x:\n    << break>> # <<done>>")
    assert fuzz.messages[-1][1] == ("Text: while x:\n    << break>> # <<done>>\n"
                                    "Marked tokens: 'break', 'done'\n\n"
                                    "Explanation: break statements")
    detect = _request("detection", "break statements", "while x: break")
    assert detect.messages[-1][1] == "Text: while x: break\n\nExplanation: break statements"


def test_without_the_token_hint_the_short_prompt_has_three_worked_answers_and_no_list() -> None:
    selfish = [_context(("def", " f", "(", " self", ")"), 3)] * 3
    off = explanation_request(selfish, [], ExplainerConfig(token_hint=False))
    assert [role for role, _ in off.messages].count("assistant") == 3
    assert "because" not in ExplainerConfig(token_hint=False).template()
    assert ExplainerConfig().template_id() != ExplainerConfig(token_hint=False).template_id()
