"""Schemas of sign-up requests, claims, join codes, terms and a team's quota (what each role may see is a type)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.models import SignupState
from api.params import UtcOut

__all__ = ["SignupCreate", "SignupCreated", "SignupOrganizerView", "SignupRefuse", "ClaimRequest", "ClaimResult",
           "JoinCode", "TermsPublic", "TermsAccept", "TermsAccepted", "Participation", "ParticipationUpdate",
           "TrackQuota", "MyParticipation", "check_text", "EMAIL_HELP"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
EMAIL_HELP = "an e-mail address like name@example.org"
JOIN_CODE_PATTERN = r"^[A-Za-z0-9_-]{8,32}$"


def check_text(value: str, *, what: str = "this field") -> str:
    """Stripped; refused (ValueError) when it holds control or bidirectional-override characters."""
    value = value.strip()
    if _CONTROL.search(value):
        raise ValueError(f"{what} may not contain control characters or line breaks")
    return value


class SignupCreate(BaseModel):
    """A request to take part in a challenge: a new team (``team_name``) or an existing one (``join_code``)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, description="Your name, as organizers and your team see it.")
    email: str = Field(min_length=3, max_length=200, description="Your e-mail address (organizers contact you there).")
    affiliation: str = Field(default="", max_length=200, description="Your lab, company or university.")
    team_name: str = Field(default="", max_length=100, description="The name of the new team to create.")
    join_code: str = Field(default="", max_length=32, description="Or: the join code of an existing team (its "
                                                                      "members see it on their page).")

    @field_validator("name", "affiliation", "team_name", "join_code")
    @classmethod
    def _text(cls, v: str) -> str:
        return check_text(v)

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        v = check_text(v)
        if not _EMAIL.match(v):
            raise ValueError(f"must be {EMAIL_HELP}")
        return v

    @model_validator(mode="after")
    def _one_team(self) -> SignupCreate:
        if not self.name:
            raise ValueError("name: give your name")
        if bool(self.team_name) == bool(self.join_code):
            raise ValueError("give either team_name (to create a new team) or join_code (to join an existing team, "
                             "from one of its members), not both and not neither")
        if self.join_code and not re.match(JOIN_CODE_PATTERN, self.join_code):
            raise ValueError("join_code: a join code is 8 to 32 letters, digits, '-' or '_'; copy it from your team")
        return self


class SignupCreated(BaseModel):
    id: int
    challenge: str
    state: SignupState
    team: str = Field(description="The team to create or to join.")
    claim_code: str = Field(description="Shown only once: keep it. After approval, exchange it ONCE for your API "
                                        "token (POST /api/signups/claim, `segarena signup claim`, or the claim page).")
    claim_url: str = Field(description="The claim page; the code travels in the URL fragment, never to the server's logs.")
    message: str


class SignupOrganizerView(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    challenge: str
    name: str
    email: str
    affiliation: str
    team_name: str = Field(description="The new team's name (empty when joining a team).")
    team_id: int | None = Field(description="The team to join (or, once approved, the team created).")
    team: str = Field(description="The team to create or join, by name.")
    team_members: int = Field(description="Members the team has now (0 for a new team).")
    state: SignupState
    reason: str
    client: str = Field(description="The address the request came from.")
    created_at: UtcOut
    decided_at: UtcOut | None
    decided_by: str
    member_id: int | None
    claim_expires_at: UtcOut | None
    claimed_at: UtcOut | None
    existing_member_ids: list[int] = Field(default_factory=list,
                                           description="Members that already have this e-mail address.")


class SignupRefuse(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000, description="Why (shown to the requester when claiming).")


class ClaimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    claim_code: str = Field(min_length=1, max_length=128, description="The code shown once when you signed up.")


class ClaimResult(BaseModel):
    state: SignupState
    message: str
    challenge: str
    team: str
    reason: str = ""
    member_id: int | None = None
    team_id: int | None = None
    token: str | None = Field(default=None, description="Your API token: returned once, on the first claim after "
                                                        "approval. Store it now; it is never shown again.")
    token_id: int | None = None


class JoinCode(BaseModel):
    team_id: int
    team: str
    join_code: str
    members: int
    message: str


class TermsPublic(BaseModel):
    challenge: str
    required: bool = Field(description="Whether the challenge has terms to accept before the first submission.")
    terms: str
    sha256: str = Field(description="SHA-256 of the terms text: what an acceptance records.")
    accepted_at: UtcOut | None = Field(default=None, description="When you accepted these terms (signed in).")


class TermsAccept(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                               description="The terms you read (their sha256): refused if they changed since.")


class TermsAccepted(BaseModel):
    challenge: str
    sha256: str
    accepted_at: UtcOut
    message: str


class Participation(BaseModel):
    challenge: str
    signup_open: bool
    terms_required: bool
    terms_sha256: str
    max_team_size: int | None


class ParticipationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signup_open: bool | None = None
    terms: str | None = Field(default=None, max_length=50000)
    max_team_size: int | None = Field(default=None, ge=1, le=1000, description="null: no limit.")


class TrackQuota(BaseModel):
    challenge: str
    track: str
    title: str
    quota_per_day: int
    used: int = Field(description="Submissions counting toward the quota in the last 24 h.")
    open_uploads: int = Field(description="Open resumable upload sessions (each holds a slot).")
    left: int
    next_slot_at: UtcOut | None = Field(description="When the oldest counted submission stops counting (a slot "
                                                    "frees); None when nothing counts.")
    is_open: bool


class MyParticipation(BaseModel):
    member_id: int
    team_id: int | None
    team: str | None
    challenges: list[dict[str, object]] = Field(description="Per challenge: terms state and team-size limit.")
    quotas: list[TrackQuota]
