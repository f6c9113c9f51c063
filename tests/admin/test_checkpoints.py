"""sam2fleet.admin.checkpoints against a real local HTTP server (127.0.0.1 only, no internet)."""

from __future__ import annotations

import hashlib
import random
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from sam2fleet.admin.checkpoints import ChecksumMismatch, DownloadError, download_checkpoint
from sam2fleet.shared.models import MODELS, ModelSpec, sha256_file

PAYLOAD = random.Random(20240929).randbytes(3 * (1 << 20) + 12345)
FILENAME = "fake_sam2.pt"


class FakeCDN(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.payload = PAYLOAD
        self.honor_range = True
        self.drop_after: int | None = None  # close the socket after this many body bytes
        self.requests: list[str | None] = []  # Range header of every GET, None if absent

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/ckpt"


class _Handler(BaseHTTPRequestHandler):
    server: FakeCDN

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append(rng)
        if self.path != f"/ckpt/{FILENAME}":
            self.send_error(404)
            return
        size = len(srv.payload)
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if srv.honor_range and m:
            start = int(m.group(1))
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        body = srv.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.drop_after is not None:
            body = body[: srv.drop_after]
        self.wfile.write(body)
        self.close_connection = True


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def cdn():
    srv = FakeCDN()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture
def spec() -> ModelSpec:
    return ModelSpec(
        name="fake_sam2",
        config="configs/sam2.1/sam2.1_hiera_t.yaml",
        filename=FILENAME,
        bytes=len(PAYLOAD),
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
    )


def _get(spec: ModelSpec, dest: Path, cdn: FakeCDN, **kw) -> Path:
    kw.setdefault("progress", False)
    return download_checkpoint(spec, dest, base_url=cdn.base_url, timeout=10.0, **kw)


def test_full_download(cdn: FakeCDN, spec: ModelSpec, tmp_path: Path) -> None:
    path = _get(spec, tmp_path / "ckpts", cdn, progress=True)
    assert path == tmp_path / "ckpts" / FILENAME
    assert sha256_file(path) == spec.sha256
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "ckpts" / f"{FILENAME}.part").exists()
    assert cdn.requests == [None]


def test_interrupted_download_resumes(cdn: FakeCDN, spec: ModelSpec, tmp_path: Path) -> None:
    part = tmp_path / f"{FILENAME}.part"
    cdn.drop_after = 1_000_003
    with pytest.raises(DownloadError) as info:
        _get(spec, tmp_path, cdn)
    assert FILENAME in str(info.value)
    assert not (tmp_path / FILENAME).exists()
    assert part.stat().st_size == 1_000_003
    assert part.read_bytes() == PAYLOAD[:1_000_003]

    cdn.drop_after = None
    path = _get(spec, tmp_path, cdn)
    assert cdn.requests == [None, "bytes=1000003-"]
    assert path.read_bytes() == PAYLOAD
    assert not part.exists()


def test_server_ignoring_range_restarts(cdn: FakeCDN, spec: ModelSpec, tmp_path: Path) -> None:
    part = tmp_path / f"{FILENAME}.part"
    part.write_bytes(b"garbage that must not end up at the front of the file")
    stale = part.stat().st_size
    cdn.honor_range = False
    with httpx.Client() as client:  # caller-supplied client is used and left open
        path = _get(spec, tmp_path, cdn, client=client)
        assert not client.is_closed
    assert cdn.requests == [f"bytes={stale}-"]
    assert path.read_bytes() == PAYLOAD
    assert not part.exists()


def test_complete_part_with_416_is_verified(cdn: FakeCDN, spec: ModelSpec, tmp_path: Path) -> None:
    (tmp_path / f"{FILENAME}.part").write_bytes(PAYLOAD)
    path = _get(spec, tmp_path, cdn)
    assert cdn.requests == [f"bytes={len(PAYLOAD)}-"]
    assert path.read_bytes() == PAYLOAD


def test_wrong_pinned_hash(cdn: FakeCDN, spec: ModelSpec, tmp_path: Path) -> None:
    with pytest.raises(ChecksumMismatch) as info:
        _get(spec, tmp_path, cdn, expected_sha256="0" * 64)
    msg = str(info.value)
    assert FILENAME in msg and "0" * 64 in msg and spec.sha256 in msg
    assert not (tmp_path / FILENAME).exists()
    assert not (tmp_path / f"{FILENAME}.part").exists()


def test_existing_good_file_skips_network(cdn: FakeCDN, spec: ModelSpec, tmp_path: Path) -> None:
    (tmp_path / FILENAME).write_bytes(PAYLOAD)
    assert _get(spec, tmp_path, cdn) == tmp_path / FILENAME
    assert cdn.requests == []


def test_existing_bad_file_is_replaced(cdn: FakeCDN, spec: ModelSpec, tmp_path: Path) -> None:
    (tmp_path / FILENAME).write_bytes(PAYLOAD[:100])
    assert _get(spec, tmp_path, cdn).read_bytes() == PAYLOAD
    assert cdn.requests == [None]


def test_http_error_is_download_error(cdn: FakeCDN, spec: ModelSpec, tmp_path: Path) -> None:
    missing = ModelSpec("x", spec.config, "missing.pt", 1, spec.sha256)
    with pytest.raises(DownloadError, match="404"):
        _get(missing, tmp_path, cdn)
    assert not (tmp_path / "missing.pt").exists()


def test_models_table() -> None:
    assert set(MODELS) == {
        "sam2.1_hiera_tiny",
        "sam2.1_hiera_small",
        "sam2.1_hiera_base_plus",
        "sam2.1_hiera_large",
    }
    for name, m in MODELS.items():
        assert m.name == name
        assert re.fullmatch(r"[0-9a-f]{64}", m.sha256)
        assert m.bytes > 0
        assert m.filename == f"{name}.pt"
        assert m.config.startswith("configs/sam2.1/") and m.config.endswith(".yaml")
    assert len({m.sha256 for m in MODELS.values()}) == 4


def _cli(monkeypatch: pytest.MonkeyPatch, cdn: FakeCDN, dest: Path, *argv: str) -> int:
    from sam2fleet import cli
    from sam2fleet.shared.settings import get_settings

    monkeypatch.setenv("SAM2FLEET_CHECKPOINT_BASE_URL", cdn.base_url)
    monkeypatch.setenv("SAM2FLEET_CHECKPOINT_DIR", str(dest))
    get_settings.cache_clear()
    try:
        return cli.main(["checkpoints", "download", *argv])
    finally:
        get_settings.cache_clear()


def test_cli_download_from_a_mirror(
    cdn: FakeCDN,
    spec: ModelSpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pinned = ModelSpec("sam2.1_hiera_tiny", spec.config, FILENAME, spec.bytes, spec.sha256)
    monkeypatch.setitem(MODELS, "sam2.1_hiera_tiny", pinned)
    assert _cli(monkeypatch, cdn, tmp_path, "sam2.1_hiera_tiny") == 0
    assert sha256_file(tmp_path / FILENAME) == spec.sha256
    assert "sha256 verified" in capsys.readouterr().out


def test_cli_refuses_a_file_that_is_not_the_pinned_one(
    cdn: FakeCDN,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real = MODELS["sam2.1_hiera_tiny"]  # Meta's pinned hash; the mirror serves other bytes
    monkeypatch.setitem(
        MODELS,
        "sam2.1_hiera_tiny",
        ModelSpec(real.name, real.config, FILENAME, len(PAYLOAD), real.sha256),
    )
    assert _cli(monkeypatch, cdn, tmp_path, "sam2.1_hiera_tiny") == 1
    assert "refused" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
