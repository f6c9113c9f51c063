"""The client's typed results read every field the server sends, with a compatible type.

The client's dataclasses (sam2fleet.client.models) mirror the server's response
schemas (sam2fleet.shared.schemas) by hand; these tests fail when the two drift, e.g.
when the server's result gains a field the client does not read.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, Literal, Union

import pydantic
import pytest
from pydantic import BaseModel

from sam2fleet.client import models as client
from sam2fleet.shared import schemas as server

# Server schema -> the client dataclass that reads it.
PAIRS: dict[type[BaseModel], type] = {
    server.JobPublic: client.Job,
    server.JobResult: client.Result,
    server.MaskRecord: client.Mask,
    server.ImageInfo: client.ImageInfo,
    server.ModelStamp: client.ModelStamp,
    server.Timings: client.Timings,
    server.ErrorBody: client.ErrorBody,
    server.VideoResult: client.VideoResult,
    server.VideoInfo: client.VideoInfo,
    server.ObjectSummary: client.ObjectSummary,
    server.Progress: client.Progress,
}
CLIENT_OF = {model.__name__: dc for model, dc in PAIRS.items()}
SERVER_OF = {dc: model.__name__ for model, dc in PAIRS.items()}
# Fields the client keeps as the JSON object (a mask's COCO RLE, as pycocotools takes it;
# its logits, as a later prompt's `mask_input` sends them back).
KEPT_WHOLE = {(client.Mask, "segmentation"), (client.Mask, "logits")}
CLIENT_ONLY = {"raw"}  # the answer as it came


def _optional(tp: Any) -> tuple[bool, Any]:
    """(whether None is allowed, the type without None)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(rest) < len(typing.get_args(tp)):
            return True, rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007
    return False, tp


def shape(tp: Any) -> Any:
    """A type as the JSON it reads or writes: "int", ("list", "float"), ("object", name)..."""
    _, tp = _optional(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):  # one of several objects (an image's or a video's)
        return ("one of", tuple(sorted(shape(a) for a in args)))
    if origin is list:
        return ("list", shape(args[0]))
    if origin is dict:
        return ("object", "any")
    if origin is Literal:
        return type(args[0]).__name__
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return type(next(iter(tp)).value).__name__
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return ("object", tp.__name__)
    if dataclasses.is_dataclass(tp):
        return ("object", SERVER_OF.get(tp, tp.__name__))  # type: ignore[arg-type]
    if tp in (int, float, str, bool):
        return tp.__name__
    raise AssertionError(f"no JSON shape for {tp!r}")


def mismatches(model: type[BaseModel], dc: type) -> list[str]:
    """What the client dataclass `dc` gets wrong about the server schema `model`."""
    hints = typing.get_type_hints(dc)
    names = {f.name for f in dataclasses.fields(dc)} - CLIENT_ONLY
    problems = [f"{n}: the server sends no such field" for n in sorted(names - set(hints))]
    problems += [
        f"{n}: the server sends no such field" for n in sorted(names - set(model.model_fields))
    ]
    for name, info in model.model_fields.items():
        if name not in names:
            problems.append(f"{name}: sent by the server, not read by the client")
            continue
        may_be_none, _ = _optional(info.annotation)
        if may_be_none and not _optional(hints[name])[0]:
            problems.append(f"{name}: the server may send null, the client does not allow it")
        want, have = shape(info.annotation), shape(hints[name])
        if (dc, name) in KEPT_WHOLE:
            if not (want[0] == "object" and have == ("object", "any")):
                problems.append(f"{name}: kept whole, but {want} is not a JSON object")
        elif want != have:
            problems.append(f"{name}: the server sends {want}, the client reads {have}")
    return problems


@pytest.mark.parametrize("model", PAIRS, ids=lambda m: m.__name__)
def test_every_server_field_is_a_client_field_of_a_compatible_type(
    model: type[BaseModel],
) -> None:
    assert mismatches(model, PAIRS[model]) == []


def test_every_schema_a_result_nests_has_a_client_model() -> None:
    """A new nested schema in the job record needs a client counterpart (or to be kept whole)."""
    nested: set[str] = set()

    def walk(tp: Any) -> None:
        _, tp = _optional(tp)
        if typing.get_origin(tp) in (Union, types.UnionType):
            for member in typing.get_args(tp):
                walk(member)
            return
        s = shape(tp)
        while isinstance(s, tuple) and s[0] == "list":
            s = s[1]
        if isinstance(s, tuple) and s[0] == "object" and s[1] not in nested | {"any"}:
            nested.add(s[1])
            for info in getattr(server, s[1]).model_fields.values():
                walk(info.annotation)

    walk(server.JobPublic)
    assert nested - set(CLIENT_OF) == {"Segmentation", "Logits"}  # the ones kept whole


def test_the_check_fails_for_a_field_the_client_does_not_know() -> None:
    """The comparison itself can fail: a result field added on the server is reported."""
    grown = pydantic.create_model("JobResult", __base__=server.JobResult, video_frames=(int, 0))
    changed = pydantic.create_model("Timings", __base__=server.Timings, embed_s=(str, ""))
    assert mismatches(grown, client.Result) == [
        "video_frames: sent by the server, not read by the client"
    ]
    assert mismatches(changed, client.Timings) == [
        "embed_s: the server sends str, the client reads float"
    ]


# --- reading a full record -----------------------------------------------------------


def example(tp: Any, default: Any = None) -> Any:
    """A value of type `tp` that differs from `default`, for every field, nested ones too."""
    _, tp = _optional(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return example(args[0])  # the first kind; the tests swap in the others
    if origin is list:
        return [example(args[0]), example(args[0])]
    if origin is dict:
        return {example(args[0]): example(args[1])}
    if origin is Literal:
        return next((v for v in args if v != default), args[0])
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return next(m.value for m in reversed(list(tp)) if m != default)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return {n: example(f.annotation, f.default) for n, f in tp.model_fields.items()}
    values = {bool: not default, int: 7 if default != 7 else 8, float: 0.625, str: "text"}
    return values[tp]


def plain(value: Any) -> Any:
    """A client object as JSON values (without `raw`), to compare with what was sent."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name not in CLIENT_ONLY
        }
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@pytest.mark.parametrize(
    ("mode", "result", "read_as"),
    [
        ("prompt", server.JobResult, client.Result),
        ("video", server.VideoResult, client.VideoResult),
    ],
)
def test_a_full_job_record_reads_back_field_for_field(
    mode: str, result: type[BaseModel], read_as: type
) -> None:
    """Every field set (none at its default): `from_dict` reads each one, and right, for an
    image job's record and a video job's."""
    record = example(server.JobPublic) | {"mode": mode, "result": example(result)}
    sent = server.JobPublic.model_validate(record).model_dump(mode="json")
    job = client.Job.from_dict(sent)
    assert plain(job) == sent
    assert isinstance(job.result, read_as) and job.result.raw == sent["result"]
