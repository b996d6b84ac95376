"""Mounts every router of the API (the API engineer grows this)."""

from fastapi import FastAPI


def include_routes(app: FastAPI) -> None:
    pass
