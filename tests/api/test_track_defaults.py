"""Track defaults have one home (api.challenges.track_settings.TRACK_DEFAULTS): a track made through the API's
schema and a track row made directly get the same settings."""

from __future__ import annotations

from api.challenges.schemas import TrackCreate, TrackUpdate
from api.challenges.track_settings import TRACK_DEFAULTS
from api.models import Challenge, Track


def _plain(value: object) -> object:
    return getattr(value, "value", value)


def test_schema_and_model_defaults_are_the_one_table(settings) -> None:
    from api.db import get_engine, session_scope
    from api.models import Base

    made = TrackCreate(slug="main").model_dump()
    # every setting the schema defaults (not slug, title or dates) is in the table, and no other
    defaulted = {k for k, f in TrackCreate.model_fields.items()
                 if not f.is_required() and k not in {"title", "opens_at", "closes_at"}}
    assert defaulted == set(TRACK_DEFAULTS)
    assert set(TRACK_DEFAULTS) <= set(TrackUpdate.model_fields)  # every setting can be changed later
    Base.metadata.create_all(get_engine(settings.database_url))
    with session_scope(settings.database_url) as s:
        ch = Challenge(slug="c", title="c")
        s.add(ch)
        s.flush()
        row = Track(challenge_id=ch.id, slug="main", title="Main")
        s.add(row)
        s.flush()
        for key, value in TRACK_DEFAULTS.items():
            assert _plain(made[key]) == value, key
            assert _plain(getattr(row, key)) == value, key
