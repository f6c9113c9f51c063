"""The playground page: plain HTML, CSS and JavaScript served beside the API.

No build step and no framework: the files in api/playground are sent as they are
(installed as package data). The page talks to the public API like any client.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

PAGE_DIR = Path(__file__).resolve().parent.parent / "playground"
PATH = "/playground"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    """A person who opens the API's address gets something to click."""
    return RedirectResponse(f"{PATH}/")


def mount(app: FastAPI) -> None:
    app.mount(PATH, StaticFiles(directory=PAGE_DIR, html=True), name="playground")
