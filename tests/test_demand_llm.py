"""LLM planning against the loopback stub: what is sent, how bad plans are fed back and
retried, and the spec that comes out (checked against the rule parser's where they overlap)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from datasetagent.agents.demand import DemandAnalyst, parse_request
from datasetagent.agents.demand_llm import LLMPlanner, describe_existing
from datasetagent.errors import BackendError, SpecError
from datasetagent.models import Usage
from datasetagent.spec import DatasetProfile, DatasetSpec, SourceSpec
from llm_stub import COMPLETION_TOKENS, PROMPT_TOKENS, Reply, StubServer


def plan_with_llm(
    request: str,
    *,
    llm: str,
    options: dict[str, object],
    existing: DatasetProfile | None = None,
    sources: list[SourceSpec] | None = None,
) -> tuple[DatasetSpec, Usage]:
    """One planning through ``LLMPlanner``: the spec and what it consumed."""
    planner = LLMPlanner(llm, options=options)
    spec = planner.plan(request, existing=existing, sources=sources or ())
    return spec, planner.usage


FAST = {"backoff": 0.001, "max_backoff": 0.005, "timeout": 5.0}
REQUEST = "200 photos each of cats and dogs for commercial use, COCO boxes, greyscale"


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server


def options(stub: StubServer, **more: Any) -> dict[str, Any]:
    return {"base_url": stub.base_url, **FAST, **more}


def cls(name: str, count: int | None = None, synonyms: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"name": name, "prompt": f"a photo of a {name}", "synonyms": list(synonyms),
            "count": count}  # fmt: skip


def reply(classes: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """A plan in the planning schema; every field the request leaves out is null."""
    plan_ = {
        "task": None, "classes": classes, "images_per_class": None, "total_images": None,
        "counts_add_to_existing": False, "formats": [], "licence": "any", "split": None,
        "min_side": None, "size": None, "color_mode": None, "enhance": None,
    }  # fmt: skip
    plan_.update(fields)
    return plan_


GOOD = reply(
    [cls("cat", synonyms=("kitty", "house cat")), cls("dog", synonyms=("puppy",))],
    task="detection",
    images_per_class=200,
    formats=["coco"],
    licence="permissive",
    color_mode="L",
)


def fed_back(stub: StubServer, index: int) -> str:
    """What request ``index`` told the model after the previous reply (the retry feedback)."""
    return json.dumps(stub.requests[index].body["messages"][-1])


def test_the_request_schema_and_model_are_sent_and_the_plan_becomes_a_spec(
    stub: StubServer,
) -> None:
    stub.script(Reply.json(GOOD))
    sources = [SourceSpec(kind="local", location="/data/pool")]
    spec, usage = plan_with_llm(REQUEST, llm="qwen2.5:7b", options=options(stub), sources=sources)

    [req] = stub.requests
    assert req.body["model"] == "qwen2.5:7b"
    schema = req.body["response_format"]["json_schema"]
    assert schema["name"] == "DatasetPlan"
    props = schema["schema"]["properties"]
    assert props["task"]["anyOf"][0]["enum"] == ["classification", "detection", "segmentation"]
    assert set(props) >= {"classes", "images_per_class", "total_images", "formats", "licence"}
    assert "tools" not in req.body  # a local server gets JSON-schema output
    assert f"Request:\n{REQUEST}" in req.text
    assert "There is no existing dataset." in req.text
    assert "Do not invent classes" in req.text  # the instructions

    assert spec.class_names == ("cat", "dog")
    assert spec.classes[0].prompt == "a photo of a cat"
    assert spec.classes[0].synonyms == ("kitty", "house cat")
    assert spec.targets() == {"cat": 200, "dog": 200}
    assert (spec.task, spec.formats, spec.licences.mode) == ("detection", ("coco",), "permissive")
    assert spec.image.color_mode == "L"
    assert spec.sources == tuple(sources)
    assert spec.request == REQUEST
    assert usage.as_dict() == {
        "calls": 1, "images": 0, "input_tokens": PROMPT_TOKENS,
        "output_tokens": COMPLETION_TOKENS, "retries": 0, "failures": 0,
    }  # fmt: skip


def test_tool_output_mode_feeds_errors_back_as_the_tool_result(
    stub: StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    stub.script(Reply.json(reply([cls("cat"), cls("cats")])), Reply.json(GOOD))
    spec, usage = plan_with_llm(REQUEST, llm="openai:gpt-4o-mini", options=options(stub))
    first, second = stub.requests
    assert first.body["tool_choice"] == "required"
    assert first.body["tools"][0]["function"]["parameters"]["properties"]["classes"]
    tool_result = second.body["messages"][-1]
    assert tool_result["role"] == "tool"
    assert "listed twice" in tool_result["content"]
    assert spec.class_names == ("cat", "dog")
    assert (usage.calls, usage.retries) == (2, 1)


MALFORMED = [
    pytest.param({"classes": "cat, dog"}, "classes", id="not-the-schema"),
    pytest.param(reply([cls("cat", count=0), cls("dog")]), "greater than or equal to 1",
                 id="count-zero"),
    pytest.param(reply([cls("cat"), cls("dog")], task="keypoints"), "keypoints",
                 id="unknown-task"),
]  # fmt: skip

CONTRADICTORY = [
    pytest.param(reply([cls("cat"), cls("cats")]), 'class \\"cats\\" is listed twice',
                 id="same-class-twice"),
    pytest.param(reply([cls("cat", synonyms=("puppy",)), cls("dog", synonyms=("puppy",))]),
                 "names both", id="shared-synonym"),
    pytest.param(reply([cls("cat", synonyms=("dog",)), cls("dog")]), "names both",
                 id="synonym-is-another-class"),
    pytest.param(reply([cls("cat"), cls("dog")], task="detection", formats=["imagefolder"]),
                 "the imagefolder format cannot hold detection labels", id="detection-imagefolder"),
    pytest.param(reply([cls("cat"), cls("dog"), cls("horse")], images_per_class=200,
                       total_images=1000), "does not add up", id="counts-contradict"),
    pytest.param(reply([cls("cat")], task="classification"), "at least two classes",
                 id="one-class-classification"),
    pytest.param(reply([]), "could not find any classes", id="no-classes"),
    pytest.param(reply([cls("cat"), cls("dog")], split={"train": 0.8, "val": 0.3, "test": 0.1}),
                 "add up to 1.2", id="split"),
    # the checks of issue 10 hold for a plan as for a request
    pytest.param(reply([cls("ca\x00t"), cls("dog")]), "holds the control character",
                 id="nul-in-class-name"),
    pytest.param(reply([cls("x" * 300), cls("dog")]), "300 bytes long in UTF-8; at most 200",
                 id="class-name-too-long"),
    pytest.param(reply([cls("cat"), cls("dog")], size={"width": 100000, "height": 100000}),
                 "more than max_pixels", id="size-too-large"),
    pytest.param(reply([cls("cat"), cls("dog")], size={"width": 4, "height": 4}),
                 "image size 4x4 is too small", id="size-too-small"),
    pytest.param(reply([cls("cat"), cls("dog")], formats=["coco"]),
                 "the coco format holds boxes or masks", id="format-does-not-change-task"),
]  # fmt: skip


@pytest.mark.parametrize(("bad", "error"), [*MALFORMED, *CONTRADICTORY])
def test_a_bad_plan_is_retried_with_the_error_fed_back(
    stub: StubServer, bad: dict[str, Any], error: str
) -> None:
    stub.script(Reply.json(bad), Reply.json(GOOD))
    spec, usage = plan_with_llm(REQUEST, llm="m", options=options(stub))
    assert len(stub.requests) == 2
    assert error in fed_back(stub, 1)
    answers = [m for m in stub.requests[1].body["messages"] if m["role"] == "assistant"]
    assert json.loads(answers[-1]["content"]) == bad  # the bad plan goes back with its error
    assert spec.class_names == ("cat", "dog")
    assert spec.task == "detection"
    assert (usage.calls, usage.retries, usage.failures) == (2, 1, 0)


def test_a_plan_that_never_passes_is_a_one_line_error_saying_how_to_fix_the_request(
    stub: StubServer,
) -> None:
    bad = reply([cls("cat"), cls("dog")], task="detection", formats=["imagefolder"])
    stub.script(*[Reply.json(bad)] * 5)
    with pytest.raises(SpecError) as err:
        plan_with_llm("detect cats and dogs, imagefolder", llm="m", options=options(stub))
    message = str(err.value)
    assert len(stub.requests) == 3  # output_retries 2 by default
    assert "\n" not in message
    assert "in 3 tries" in message
    assert "the imagefolder format cannot hold detection labels; use coco" in message
    assert "without --llm" in message


def test_the_number_of_tries_is_an_option(stub: StubServer) -> None:
    stub.script(*[Reply.json(reply([cls("cat")]))] * 3)
    with pytest.raises(SpecError, match=r"in 1 try; .*at least two classes"):
        plan_with_llm("cats", llm="m", options=options(stub, output_retries=0))
    assert len(stub.requests) == 1


def test_a_server_that_keeps_failing_is_a_backend_error(stub: StubServer) -> None:
    stub.script(Reply.error(500), Reply.error(500))
    with pytest.raises(BackendError, match=r"gave no plan: .*without --llm") as err:
        plan_with_llm(REQUEST, llm="m", options=options(stub, max_retries=1))
    assert "\n" not in str(err.value)
    assert len(stub.requests) == 2


def profile() -> DatasetProfile:
    return DatasetProfile(
        path="/data/pets",
        class_counts={"cat": 120, "dog": 80},
        split_counts={"train": 160, "val": 40},
        common_size=(64, 64),
        min_side=64,
        color_mode="L",
    )


def test_expanding_sends_a_summary_and_inherits_as_the_rule_parser_does(
    stub: StubServer,
) -> None:
    existing = profile()
    llm_plan = reply(
        [cls("dog", synonyms=("puppy",)), cls("horses", synonyms=("pony",))],
        images_per_class=50,
        counts_add_to_existing=True,
    )
    stub.script(Reply.json(llm_plan))
    request = "add 50 images per class, and horses"
    spec, _ = plan_with_llm(request, llm="m", options=options(stub), existing=existing)

    text = stub.requests[0].text
    assert describe_existing(existing) in text
    for fact in ('"cat": 120', '"dog": 80', "all 64x64 px", "greyscale (L)", "imagefolder",
                 "train: 160, val: 40", "task: classification"):  # fmt: skip
        assert fact in text

    by_rule = parse_request(request, existing=existing)
    assert spec.class_names == by_rule.class_names == ("cat", "dog", "horses")
    assert spec.targets() == by_rule.targets() == {"cat": 170, "dog": 130, "horses": 50}
    # inherited and defaulted fields are the rule parser's
    assert spec.model_dump(exclude={"classes"}) == by_rule.model_dump(exclude={"classes"})
    assert spec.image.size == (64, 64)
    assert spec.image.enhance == "off"
    assert spec.splits.shares() == {"train": 0.8, "val": 0.2, "test": 0.0}
    # the model's descriptions of an existing class and a new one are kept
    assert spec.classes[1].synonyms == ("puppy",)
    assert spec.classes[2].synonyms == ("pony",)  # "horse" is only another number


def test_expanding_with_final_counts_and_a_task_the_dataset_does_not_have(
    stub: StubServer,
) -> None:
    stub.script(
        Reply.json(reply([cls("cat")], task="detection", images_per_class=300)),
        Reply.json(reply([cls("cat")], images_per_class=300)),
    )
    spec, _ = plan_with_llm("300 per class", llm="m", options=options(stub), existing=profile())
    assert "the existing dataset is for classification" in fed_back(stub, 1)
    # "cat" asks nothing of its own and is inherited; no class is listed twice
    assert spec.targets() == {"cat": 300, "dog": 300}


def test_the_analyst_plans_by_rule_without_an_llm() -> None:
    analyst = DemandAnalyst()
    assert analyst.plan("cats and dogs, 50 each") == parse_request("cats and dogs, 50 each")
    assert analyst.usage.calls == 0


def test_the_analyst_plans_with_its_llm_and_counts_usage(stub: StubServer) -> None:
    stub.script(Reply.json(GOOD), Reply.json(GOOD))
    analyst = DemandAnalyst(llm="ollama:qwen2.5:7b", options=options(stub))
    assert analyst.plan(REQUEST).class_names == ("cat", "dog")
    assert analyst.plan(REQUEST).task == "detection"
    assert analyst.usage.calls == 2
    assert stub.requests[0].body["model"] == "qwen2.5:7b"
    assert LLMPlanner("m", options=options(stub)).usage.calls == 0  # building sends nothing
    assert len(stub.requests) == 2


def test_a_count_for_the_first_class_only_is_that_class_s_count(stub: StubServer) -> None:
    """The rule parser reads "40 cats and dogs" as a total; a plan says what each count is."""
    stub.script(Reply.json(reply([cls("cat", count=40), cls("dog")], images_per_class=None)))
    spec, _ = plan_with_llm("40 cats, and dogs", llm="m", options=options(stub))
    assert spec.targets() == {"cat": 40, "dog": 100}
    assert parse_request("40 cats and dogs").targets() == {"cats": 20, "dogs": 20}


def test_a_plan_can_turn_enhancement_off_and_its_fields_are_shown(stub: StubServer) -> None:
    plan_ = reply([cls("cat"), cls("dog")], enhance="off", images_per_class=30)
    stub.script(Reply.json(plan_))
    planned = LLMPlanner("m", options=options(stub)).explain("cats and dogs, 30 each, raw pixels")
    assert planned.spec.image.enhance == "off"
    assert planned.spec.target_per_class == 30
    shown = [(r.phrase, r.setting) for r in planned.readings]
    assert ("plan.enhance", "enhance: off") in shown
    assert ("plan.images_per_class", "images_per_class: 30") in shown
    assert ("cat", "class: cat") in shown
