"""deploy/Dockerfile, checked against the project it packages: for each image the
compose file builds (sam2fleet:cpu, sam2fleet:gpu), what it installs, in which order,
which packages it holds, what it runs and as whom. Read by tests/deploy/dockerfile.py;
no Docker needed.
"""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.deploy import dockerfile
from tests.deploy.code_names import check_settings
from tests.deploy.compose import load
from tests.support import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
IMAGES = load().built_images()  # image name -> the services that run it


def instructions_of(image: str) -> list[dockerfile.Instruction]:
    return IMAGES[image][0].image_instructions()


def test_every_image_name_is_built_one_way() -> None:
    assert set(IMAGES) == {"sam2fleet:cpu", "sam2fleet:gpu"}, set(IMAGES)
    for image, services in IMAGES.items():
        builds = {repr(s.build) for s in services}
        assert len(builds) == 1, f"{image} is built differently by {[s.name for s in services]}"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_image_runs_the_sam2fleet_cli_as_non_root(image: str) -> None:
    instructions = instructions_of(image)
    (script,) = [k for k, v in PYPROJECT["project"]["scripts"].items() if v == "sam2fleet.cli:main"]
    entrypoints = dockerfile.entrypoints(instructions)
    assert entrypoints and entrypoints[-1] == [script], (
        f"{image}: ENTRYPOINT must be exec-form [{script!r}] so compose commands are "
        f"subcommands; got {entrypoints}"
    )
    users = dockerfile.users(instructions)
    assert users and users[-1] not in ("root", "0"), f"{image}: runs as root"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_image_environment_names_real_settings(image: str) -> None:
    check_settings(dockerfile.env(instructions_of(image)), image)


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_dockerfile_installs_torch_then_sam2_then_the_project(image: str) -> None:
    instructions = instructions_of(image)
    installs = dockerfile.pip_installs(instructions)
    image_env = dockerfile.env(instructions)

    def first(project: str) -> dockerfile.PipInstall:
        hits = [p for p in installs if p.requirement(project)]
        assert hits, f"{image}: nothing installs {project}"
        return hits[0]

    torch, torchvision, sam2 = first("torch"), first("torchvision"), first("sam2")
    project = next(
        (p for p in installs if any(re.fullmatch(r"\.\[server,model\]", a) for a in p.args)),
        None,
    )
    assert project, f"{image}: the project is not installed with `pip install .[server,model]`"
    assert torch.position < sam2.position, "torch must be installed before sam2"
    assert torchvision.position < sam2.position, "torchvision must be installed before sam2"
    assert sam2.position < project.position, "sam2 must be installed before the project"

    (pin,) = [
        r for r in PYPROJECT["project"]["optional-dependencies"]["model"] if re.match(r"^sam2\b", r)
    ]
    assert "==" in pin, f"pyproject must pin sam2 exactly, not {pin!r}"
    assert sam2.requirement("sam2") == pin.replace(" ", ""), (
        f"{image}: installs {sam2.requirement('sam2')}, pyproject pins {pin}"
    )
    assert "--no-build-isolation" in sam2.args
    assert {**image_env, **sam2.env}.get("SAM2_BUILD_CUDA") in ("0", "1"), (
        f"{image}: set SAM2_BUILD_CUDA for the sam2 install"
    )

    # Images whose workers run on the CPU take torch from the CPU-only index.
    workers = [s for s in IMAGES[image] if s.name.startswith("worker")]
    if any(s.setting("device") == "cpu" for s in workers):
        indexes = torch.indexes()
        assert any(url.rstrip("/").endswith("/whl/cpu") for url in indexes), (
            f"{image}: CPU image must install torch from the CPU index, got {indexes}"
        )


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_image_holds_every_package_the_project_installs(image: str) -> None:
    """`pip install .` inside the image only installs the packages copied into it; the
    console script imports all of them (the client's subcommands too)."""
    copied = dockerfile.copied_sources(instructions_of(image))
    folders = {d.split("/")[0] for d in PYPROJECT["tool"]["setuptools"]["package-dir"].values()}
    missing = sorted(folders - copied)
    assert not missing, f"{image}: the image does not COPY {missing}"


@pytest.mark.parametrize("path", ["deploy/Dockerfile", "docker-compose.yml"])
def test_files_the_comments_point_to_exist(path: str) -> None:
    text = (ROOT / path).read_text()
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    named = set(
        re.findall(r"(?<![\w/.-])((?:docs|deploy|tests)/[\w./-]*\w|[\w-]+\.md)\b", comments)
    )
    assert named, f"{path}: no file named in its comments"
    missing = sorted(n for n in named if not (ROOT / n).exists())
    assert not missing, f"{path} points to files that do not exist: {missing}"
