"""The gateway's prompt checks at their boundaries: points and boxes on the image's
edges, the count limits exactly, and the earlier job a `mask_input` names."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from sam2fleet.api.prompts import check_mask_inputs, check_prompts
from sam2fleet.shared.errors import Conflict, InvalidInput, InvalidPrompt, NotFound
from sam2fleet.shared.images import ProbedImage
from sam2fleet.shared.records import JobRecord
from sam2fleet.shared.schemas import JobSpec, JobStatus, Prompt
from sam2fleet.shared.settings import Settings

IMAGE = ProbedImage("img1", "PNG", width=40, height=30)
MODEL = "sam2.1_hiera_tiny"
SETTINGS = Settings(max_objects=3, max_points=2)


def check(*prompts: Prompt) -> None:
    check_prompts(list(prompts), IMAGE, SETTINGS)


def test_points_and_boxes_on_the_images_edges_are_inside() -> None:
    check(Prompt(points=[[0, 0], [40, 30]], labels=[1, 0]), Prompt(box=[0, 0, 40, 30]))


@pytest.mark.parametrize("point", [[-0.5, 10], [10, -0.5], [40.5, 10], [10, 30.5]])
def test_a_point_past_any_edge_is_refused(point: list[float]) -> None:
    with pytest.raises(InvalidPrompt, match=r"prompts\[1\] point .* outside the 40x30 image"):
        check(Prompt(points=[[1, 1]], labels=[1]), Prompt(points=[point], labels=[1]))


@pytest.mark.parametrize("box", [[-1, 0, 40, 30], [0, -1, 40, 30], [0, 0, 41, 30], [0, 0, 40, 31]])
def test_a_box_past_any_edge_is_refused(box: list[float]) -> None:
    with pytest.raises(InvalidPrompt, match=r"prompts\[0\] box .* outside the 40x30 image"):
        check(Prompt(box=box))


def test_the_object_and_point_limits_hold_exactly() -> None:
    box = Prompt(box=[1, 1, 5, 5])
    check(box, box, box)  # max_objects
    with pytest.raises(InvalidPrompt, match="4 prompts; at most 3 per job"):
        check(box, box, box, box)
    check(Prompt(points=[[1, 1], [2, 2]], labels=[1, 1]))  # max_points
    with pytest.raises(InvalidPrompt, match=r"prompts\[0\] has 3 points; at most 2"):
        check(Prompt(points=[[1, 1], [2, 2], [3, 3]], labels=[1, 1, 1]))


# --- mask_input: the earlier job it names -------------------------------------------


def _earlier(multimask: bool = True, objects: int = 2, **changes: object) -> JobRecord:
    spec = JobSpec(prompts=[Prompt(box=[1, 1, 5, 5])] * objects, multimask=multimask)
    record = JobRecord.new("earlier", spec, MODEL, "img1", "alice")
    fields = record.__dict__ | {"status": JobStatus.succeeded} | changes
    return JobRecord(**fields)  # type: ignore[arg-type]


def _refine(earlier: JobRecord | None, prompt_index: int = 0, candidate: int = 0) -> None:
    """Run the check with a lookup that answers `earlier` (a test double for the
    service's owner-checked read), or NotFound when None."""

    async def lookup(job_id: str) -> JobRecord:
        if earlier is None:
            raise NotFound(f"no job {job_id}")
        return earlier

    mask_input = {"job_id": "earlier", "prompt_index": prompt_index, "candidate": candidate}
    spec = JobSpec(prompts=[Prompt(points=[[2, 2]], labels=[1], mask_input=mask_input)])
    asyncio.run(check_mask_inputs(spec, IMAGE, MODEL, lookup, SETTINGS))


def test_the_last_object_and_candidate_of_an_earlier_job_can_be_refined() -> None:
    _refine(_earlier(objects=2), prompt_index=1, candidate=2)
    _refine(_earlier(multimask=False), candidate=0)


def test_an_object_or_candidate_past_the_last_is_refused() -> None:
    with pytest.raises(InvalidInput, match="has 2 object"):
        _refine(_earlier(objects=2), prompt_index=2)
    with pytest.raises(InvalidInput, match=r"gave 1 mask\(s\) per object"):
        _refine(_earlier(multimask=False), candidate=1)


@pytest.mark.parametrize(
    ("changes", "error", "says"),
    [
        ({"image_id": "img2"}, InvalidInput, "was on image img2, not img1"),
        ({"model": "sam2.1_hiera_small"}, InvalidInput, "was a prompt job of sam2.1_hiera_small"),
        ({"mode": "auto"}, InvalidInput, "was a auto job of"),
        ({"status": JobStatus.running}, Conflict, "is running; only a succeeded"),
        ({"status": JobStatus.failed}, Conflict, "is failed"),
    ],
)
def test_an_earlier_job_must_match_and_have_succeeded(
    changes: dict[str, object], error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=says):
        _refine(_earlier(**changes))


def test_an_unknown_earlier_job_is_not_found() -> None:
    with pytest.raises(NotFound):
        _refine(None)


@pytest.mark.parametrize(("image_size", "side"), [(None, 256), (256, 64)])
def test_sent_logits_must_have_the_models_low_resolution_side(
    image_size: int | None, side: int
) -> None:
    settings = Settings(model_image_size=image_size)

    def spec(n: int) -> JobSpec:
        data = base64.b64encode(np.zeros((n, n), "<f2").tobytes()).decode()
        logits = {"data": data, "shape": [n, n]}
        return JobSpec(prompts=[Prompt(box=[1, 1, 5, 5], mask_input={"logits": logits})])

    async def no_lookup(job_id: str) -> JobRecord:
        raise AssertionError("logits need no lookup")

    asyncio.run(check_mask_inputs(spec(side), IMAGE, MODEL, no_lookup, settings))
    with pytest.raises(InvalidInput, match=r"prompts\[0\]\.mask_input\.logits: shape"):
        asyncio.run(check_mask_inputs(spec(side // 2), IMAGE, MODEL, no_lookup, settings))


def test_every_prompts_mask_input_is_checked_not_only_the_first() -> None:
    """A prompt without a mask_input, or with good logits, does not end the checks."""
    data = base64.b64encode(np.zeros((256, 256), "<f2").tobytes()).decode()
    logits = {"logits": {"data": data, "shape": [256, 256]}}
    bad = {"job_id": "earlier", "prompt_index": 5}

    async def lookup(job_id: str) -> JobRecord:
        return _earlier(objects=1)

    for first in (Prompt(box=[1, 1, 5, 5]), Prompt(box=[1, 1, 5, 5], mask_input=logits)):
        spec = JobSpec(prompts=[first, Prompt(box=[1, 1, 5, 5], mask_input=bad)])
        with pytest.raises(InvalidInput, match=r"prompts\[1\]\.mask_input: job earlier has 1"):
            asyncio.run(check_mask_inputs(spec, IMAGE, MODEL, lookup, SETTINGS))
