"""The LLM tool policy against the loopback stub: what it asks, how answers are checked against
the registered tools, the rule policy standing in, and the SSIM guard on what it chooses."""

from __future__ import annotations

import base64
import io
import json
import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from datasetagent.agents.demand import parse_request
from datasetagent.agents.processing_llm import (
    PARAM_BOUNDS,
    LLMToolPolicy,
    ToolDecision,
    check_calls,
)
from datasetagent.errors import ConfigError
from datasetagent.spec import DatasetSpec
from datasetagent.tools.enhance import (
    ENHANCERS,
    POLICY_SIDE,
    EnhancePolicy,
    RulePolicy,
    ToolCall,
    enhance,
)
from datasetagent.tools.quality import analysis_array, score_array
from llm_stub import Reply, StubServer

FAST = {"backoff": 0.001, "max_backoff": 0.005, "timeout": 5.0}
SPEC = parse_request("cats and dogs")
MILD = {"usable": True, "reason": "a bit dark", "tools": [{"tool": "gamma", "gamma": 0.8}]}


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server


@pytest.fixture(scope="module")
def dark_photo(photo_images: list[Image.Image]) -> np.ndarray:
    """A real photo at 40 % brightness: the rule policy brightens it."""
    arr = np.asarray(photo_images[0].convert("RGB"), dtype=np.float64)
    return (arr * 0.4).astype(np.uint8)


def scores_of(img: np.ndarray) -> dict[str, float]:
    return score_array(analysis_array(img, POLICY_SIDE))


def policy(stub: StubServer, spec: DatasetSpec = SPEC, **options: Any) -> LLMToolPolicy:
    return LLMToolPolicy(
        "qwen2.5vl:7b", spec, options={"base_url": stub.base_url, **FAST, **options}
    )


def test_asks_with_scores_tools_rule_hint_and_thumbnail(
    stub: StubServer, dark_photo: np.ndarray
) -> None:
    pol = policy(stub)
    scores = scores_of(dark_photo)
    stub.script(Reply.json(MILD))
    decision = pol.decide(scores, "RGB", Image.fromarray(dark_photo))

    assert decision == ToolDecision(
        (ToolCall("gamma", {"gamma": 0.8}),), True, "a bit dark", usage=decision.usage
    )
    assert (decision.usage.calls, decision.usage.images, decision.usage.failures) == (1, 1, 0)
    [req] = stub.requests
    assert req.body["model"] == "qwen2.5vl:7b"
    schema = json.dumps(req.body["response_format"]["json_schema"]["schema"])
    photometric = [n for n in ENHANCERS.names() if not ENHANCERS.get(n).geometric]
    for name in photometric:
        assert f'"const": "{name}"' in schema or f'"enum": ["{name}"]' in schema
    assert "letterbox" not in schema
    assert '"maximum": 5.0' in schema  # gamma's bound
    text = req.text
    assert f"brightness: {scores['brightness']:.4g}" in text
    assert "classes: cats (a photo of a cat); dogs (a photo of a dog)" in text
    rule = RulePolicy().choose(scores, "RGB")
    assert f"A rule-based policy would apply: {rule[0].name}(" in text
    assert "falls below 0.8" in text
    assert "gamma (default 1.0, 0.2 to 5)" in text
    assert "text inside it" in text  # images are data, not instructions
    [url] = req.image_urls
    thumb = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert max(thumb.size) == 384


BAD_ANSWERS = [
    pytest.param({"tool": "blur", "radius": 2}, "does not match any of the expected tags",
                 id="unknown-tool"),
    pytest.param({"tool": "gamma", "gamma": 9.0}, "less than or equal to 5", id="out-of-range"),
    pytest.param({"tool": "gamma", "gamma": 0.8, "strength": 1}, "extra_forbidden",
                 id="unknown-parameter"),
    pytest.param({"tool": "sharpen", "amount": 0.5}, "sigma", id="missing-parameter"),
    pytest.param({"tool": "letterbox", "width": 10, "height": 10, "fill": 0},
                 "does not match any of the expected tags", id="geometric-tool"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "error"), BAD_ANSWERS)
def test_invalid_answers_are_retried_with_the_error(
    stub: StubServer, dark_photo: np.ndarray, call: dict[str, Any], error: str
) -> None:
    pol = policy(stub)
    stub.script(Reply.json({"usable": True, "reason": "", "tools": [call]}), Reply.json(MILD))
    decision = pol.decide(scores_of(dark_photo), "RGB")
    assert decision.by == "llm"
    assert decision.calls == (ToolCall("gamma", {"gamma": 0.8}),)
    assert error in json.dumps(stub.requests[1].body["messages"][-1])
    assert (decision.usage.calls, decision.usage.retries) == (2, 1)
    assert stub.requests[0].image_urls == []  # no thumbnail given, none sent


def test_a_tool_used_twice_is_refused_by_the_registry_check(
    stub: StubServer, dark_photo: np.ndarray
) -> None:
    pol = policy(stub)
    twice = {"tool": "gamma", "gamma": 0.8}
    stub.script(
        Reply.json({"usable": True, "reason": "", "tools": [twice, twice]}), Reply.json(MILD)
    )
    assert pol.decide(scores_of(dark_photo), "RGB").by == "llm"
    assert "gamma is listed twice" in json.dumps(stub.requests[1].body["messages"][-1])


@pytest.mark.parametrize(
    ("calls", "problem"),
    [
        ([ToolCall("gamma", {"gamma": 0.8}), ToolCall("sharpen")], None),
        ([ToolCall("gamma", {"gamma": 7})], "gamma: gamma must be from 0.2 to 5, got 7"),
        ([ToolCall("gamma", {"gamma": "bright"})], "must be a number"),
        ([ToolCall("blur")], "unknown enhancement tool 'blur'"),
        ([ToolCall("resize", {"width": 8})], "geometric"),
        ([ToolCall("denoise", {"h": 5, "size": 3})], "has no parameter size"),
    ],
)
def test_check_calls_against_the_registry(calls: list[ToolCall], problem: str | None) -> None:
    result = check_calls(calls, "RGB")
    assert result == problem if problem is None else problem in (result or "")
    assert check_calls([ToolCall("white_balance")], "L") is None  # tried on a grey image too


def test_the_rule_policy_stands_in_when_no_answer_validates(
    stub: StubServer, dark_photo: np.ndarray
) -> None:
    pol = policy(stub, output_retries=1)
    scores = scores_of(dark_photo)
    stub.script(*[Reply.json({"usable": True, "reason": "", "tools": [{"tool": "blur"}]})] * 2)
    decision = pol.decide(scores, "RGB", dark_photo)
    assert len(stub.requests) == 2
    assert decision.by == "rule"
    assert decision.usable
    assert list(decision.calls) == RulePolicy().choose(scores, "RGB")
    assert "blur" in decision.fallback
    assert (decision.usage.calls, decision.usage.failures) == (2, 1)
    assert pol.usage.failures == 1
    step = decision.step()
    assert step.params["by"] == "rule"
    assert step.params["tools"] == ",".join(c.name for c in decision.calls)


def test_the_rule_policy_stands_in_when_the_server_keeps_failing(
    stub: StubServer, dark_photo: np.ndarray
) -> None:
    pol = policy(stub, max_retries=1)
    stub.script(Reply.error(503), Reply.error(503))
    decision = pol.decide(scores_of(dark_photo), "RGB")
    assert decision.by == "rule"
    assert "after 1 retries" in decision.fallback


def test_an_unusable_image_gets_no_tools(stub: StubServer, dark_photo: np.ndarray) -> None:
    pol = policy(stub)
    stub.script(
        Reply.json(
            {"usable": False, "reason": "a collage", "tools": [{"tool": "gamma", "gamma": 1.0}]}
        )
    )
    decision = pol.decide(scores_of(dark_photo), "RGB", dark_photo)
    assert (decision.usable, decision.reason, decision.calls) == (False, "a collage", ())
    assert decision.step().params["reason"] == "a collage"
    stub.script(Reply.json({"usable": False, "reason": "a collage", "tools": []}))
    assert pol.choose(scores_of(dark_photo), "RGB") == []


def test_the_ssim_guard_undoes_a_destructive_choice(
    stub: StubServer, dark_photo: np.ndarray
) -> None:
    """A valid but heavy-handed answer (gamma 4, within bounds) is applied through enhance(),
    whose guard restores the input; a mild one is kept."""
    pol = policy(stub)
    scores = scores_of(dark_photo)
    gamma, sharpen = {"tool": "gamma", "gamma": 4.0}, {"tool": "sharpen", "amount": 3, "sigma": 5}
    heavy = {"usable": True, "reason": "", "tools": [gamma, sharpen]}
    stub.script(Reply.json(heavy), Reply.json(MILD))
    floor = SPEC.image.ssim_floor

    destructive = enhance(dark_photo, pol.decide(scores, "RGB").calls, ssim_floor=floor)
    assert destructive.undone
    assert destructive.ssim < floor
    assert np.array_equal(destructive.image, dark_photo)
    assert destructive.steps[-1].params["undid"] == "gamma,sharpen"

    mild = enhance(dark_photo, pol.decide(scores, "RGB").calls, ssim_floor=floor)
    assert not mild.undone
    assert mild.image.mean() > dark_photo.mean()


def test_pickles_without_its_connection_and_reconnects(
    stub: StubServer, dark_photo: np.ndarray
) -> None:
    pol = policy(stub)
    as_policy: EnhancePolicy = pol  # the rule policy's interface
    assert as_policy is pol
    copy = pickle.loads(pickle.dumps(pol))
    assert copy._client is None
    stub.script(Reply.json(MILD))
    assert copy.decide(scores_of(dark_photo), "L").calls == (ToolCall("gamma", {"gamma": 0.8}),)
    assert copy.usage.calls == 1
    assert pol.usage.calls == 0


def test_construction_checks_model_tools_and_bounds() -> None:
    with pytest.raises(ConfigError, match="did you mean 'ollama'"):
        LLMToolPolicy("olama:llava", SPEC)
    with pytest.raises(ConfigError, match="geometric tools are applied from the spec"):
        LLMToolPolicy("ollama:llava", SPEC, tools=["gamma", "letterbox"])
    only = LLMToolPolicy("ollama:llava", SPEC, tools=["gamma"])
    assert only.tool_names == ("gamma",)
    for tool, params in PARAM_BOUNDS.items():  # every bound names a real parameter
        assert set(params) <= set(ENHANCERS.get(tool).defaults)
