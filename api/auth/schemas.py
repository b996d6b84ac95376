"""Schemas of teams, members and tokens."""

from __future__ import annotations


from pydantic import BaseModel, ConfigDict, Field

from api.params import UtcOut

from api.models import Role


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    affiliation: str = Field(default="", max_length=200)


class TeamPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    affiliation: str
    created_at: UtcOut


class MemberCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    email: str = Field(default="", max_length=200)
    role: Role = Role.participant


class MemberPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    email: str
    role: Role
    team_id: int | None
    created_at: UtcOut


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field(default="", max_length=100)


class TokenPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    member_id: int
    prefix: str
    label: str
    created_at: UtcOut
    last_used_at: UtcOut | None
    revoked_at: UtcOut | None
    parent_id: int | None = Field(default=None, description="The token that minted this one (revoking it revokes this one).")


class TokenRevoked(BaseModel):
    token: TokenPublic
    also_revoked: list[int] = Field(description="Ids of the tokens it had minted (transitively), revoked with it now.")


class TokenCreated(TokenPublic):
    token: str = Field(description="The API token itself. It is shown only once: store it now.")


class MemberCreated(BaseModel):
    member: MemberPublic
    token: str = Field(description="The member's API token, shown only once.")
    token_id: int


class Me(BaseModel):
    member: MemberPublic
    team: TeamPublic | None
    token: TokenPublic | None = None
