"""Prompts checked at the gateway against what the schema cannot see, before
anything is queued: the image's size, and the earlier jobs a `mask_input` names.

Sent logits must have the model's low-resolution shape, fill it exactly and hold
only finite values. A named job must be the caller's own (another key's job is 404,
like a missing one), on the same image and model, a prompt job that succeeded, and
have the object and candidate named. Whether its worker still holds the logits only
that worker knows: a job whose reference is gone fails with `mask_input_gone` (410).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from sam2fleet.shared.errors import Conflict, InvalidInput, InvalidPrompt
from sam2fleet.shared.images import ProbedImage
from sam2fleet.shared.logits import decode_logits, low_res_side
from sam2fleet.shared.records import JobRecord
from sam2fleet.shared.schemas import JobSpec, JobStatus, Prompt
from sam2fleet.shared.settings import Settings

Lookup = Callable[[str], Awaitable[JobRecord]]


def check_prompts(prompts: list[Prompt], image: ProbedImage, settings: Settings) -> None:
    """Geometry that needs the image size; shapes were checked by the schema."""
    if len(prompts) > settings.max_objects:
        raise InvalidPrompt(f"{len(prompts)} prompts; at most {settings.max_objects} per job")
    w, h = image.width, image.height
    for i, prompt in enumerate(prompts):
        if prompt.points is not None:
            if len(prompt.points) > settings.max_points:
                raise InvalidPrompt(
                    f"prompts[{i}] has {len(prompt.points)} points; at most {settings.max_points}"
                )
            for x, y in prompt.points:
                if not (0 <= x <= w and 0 <= y <= h):
                    raise InvalidPrompt(
                        f"prompts[{i}] point [{x}, {y}] lies outside the {w}x{h} image"
                    )
        if prompt.box is not None:
            x1, y1, x2, y2 = prompt.box
            if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
                raise InvalidPrompt(
                    f"prompts[{i}] box {json.dumps(prompt.box)} lies outside the {w}x{h} image"
                )


async def check_mask_inputs(
    spec: JobSpec, image: ProbedImage, model: str, lookup: Lookup, settings: Settings
) -> None:
    """`lookup(job_id)` is the caller's job record, or raises NotFound."""
    side = low_res_side(settings.model_image_size)
    for i, prompt in enumerate(spec.prompts):
        given = prompt.mask_input
        where = f"prompts[{i}].mask_input"
        if given is None:
            continue
        if given.logits is not None:
            decode_logits(given.logits, side, f"{where}.logits")
            continue
        assert given.job_id is not None
        earlier = await lookup(given.job_id)
        name = f"{where}: job {given.job_id}"
        if earlier.image_id != image.image_id:
            raise InvalidInput(f"{name} was on image {earlier.image_id}, not {image.image_id}")
        if earlier.model != model or earlier.mode != "prompt":
            raise InvalidInput(f"{name} was a {earlier.mode} job of {earlier.model}, not {model}")
        if earlier.status is not JobStatus.succeeded:
            raise Conflict(f"{name} is {earlier.status.value}; only a succeeded job's masks refine")
        earlier_spec = earlier.spec
        if given.prompt_index >= len(earlier_spec.prompts):
            raise InvalidInput(f"{name} has {len(earlier_spec.prompts)} object(s)")
        if given.candidate >= (3 if earlier_spec.multimask else 1):
            raise InvalidInput(f"{name} gave {1 + 2 * earlier_spec.multimask} mask(s) per object")
