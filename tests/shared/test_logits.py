"""Mask logits on the wire: what a worker's `logits` output holds, and what the gateway
refuses before decoding it."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from sam2fleet.shared import logits as wire
from sam2fleet.shared.errors import InvalidInput
from sam2fleet.shared.schemas import Logits

SIDE = 64


def test_the_output_is_the_arrays_float16_bytes_row_major_with_its_shape() -> None:
    # Not square, so an axis read the wrong way round shows.
    array = np.arange(3 * 5, dtype=np.float32).reshape(3, 5) / 4 - 1.5
    out = wire.encode_logits(array)
    assert out["shape"] == [3, 5] and out["dtype"] == "float16"
    raw = base64.b64decode(str(out["data"]))
    assert raw == array.astype("<f2").tobytes()
    back = np.frombuffer(raw, dtype="<f2").reshape(3, 5)
    assert np.array_equal(back, array)  # quarters are exact in float16


def test_an_output_sent_back_decodes_to_the_same_values() -> None:
    rng = np.random.default_rng(0)
    array = rng.uniform(-32, 32, size=(SIDE, SIDE)).astype(np.float32)
    sent = Logits.model_validate(wire.encode_logits(array))
    back = wire.decode_logits(sent, SIDE, "prompts[0].mask_input.logits")
    assert back.dtype == np.float32 and back.shape == (SIDE, SIDE)
    assert np.array_equal(back, array.astype(np.float16).astype(np.float32))


def _logits(n_bytes: int) -> Logits:
    return Logits(
        data=base64.b64encode(b"\0" * n_bytes).decode(), shape=[SIDE, SIDE], dtype="float16"
    )


@pytest.mark.parametrize("extra", [3, 1 << 20])
def test_a_payload_too_long_is_refused_before_it_is_decoded(
    extra: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the smallest oversized payload (one base64 block more) to a huge one."""

    def no_decoding(*_: object, **__: object) -> bytes:
        raise AssertionError("an oversized payload was decoded")

    want = SIDE * SIDE * 2
    sent = _logits(want + extra)
    monkeypatch.setattr(wire.base64, "b64decode", no_decoding)
    with pytest.raises(InvalidInput, match=rf"base64 characters; {want} bytes expected"):
        wire.decode_logits(sent, SIDE, "where")


@pytest.mark.parametrize("n_bytes", [SIDE * SIDE * 2 - 2, SIDE * SIDE * 2 + 1])
def test_a_payload_within_a_block_of_the_size_is_decoded_and_measured(n_bytes: int) -> None:
    with pytest.raises(InvalidInput, match=rf"{n_bytes} bytes; \[64, 64\] float16"):
        wire.decode_logits(_logits(n_bytes), SIDE, "where")


def test_the_exact_size_is_accepted() -> None:
    assert not wire.decode_logits(_logits(SIDE * SIDE * 2), SIDE, "where").any()


def test_the_logits_side_is_a_quarter_of_the_models_input() -> None:
    assert wire.low_res_side(None) == 256  # SAM 2.1's 1024 px
    assert type(wire.low_res_side(None)) is int  # an array side, not a float
    assert [wire.low_res_side(n) for n in (512, 256, 1024)] == [128, 64, 256]


def test_the_early_check_refuses_from_the_first_length_past_a_whole_payload() -> None:
    """10,924 characters carry 8,192 bytes; 10,926 and 10,927 are no base64 length at
    all (refused when decoded), 10,927 already by the early check."""
    good = _logits(SIDE * SIDE * 2).data
    with pytest.raises(InvalidInput, match="data is not valid base64"):
        wire.decode_logits(Logits(data="A" * (len(good) + 2), shape=[SIDE, SIDE]), SIDE, "w")
    with pytest.raises(InvalidInput, match="10927 base64 characters"):
        wire.decode_logits(Logits(data="A" * (len(good) + 3), shape=[SIDE, SIDE]), SIDE, "w")


def test_data_outside_base64_is_refused_not_skipped() -> None:
    good = _logits(SIDE * SIDE * 2).data
    for bad in (good[:100] + "*" + good[100:], good[:-4] + "!!!!"):
        with pytest.raises(InvalidInput, match="data is not valid base64"):
            wire.decode_logits(Logits(data=bad, shape=[SIDE, SIDE]), SIDE, "where")
