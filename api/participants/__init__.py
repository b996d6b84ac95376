"""Participants: anonymous sign-up with organizer approval, one-time token claim, team join codes, challenge terms,
team-size limits and what a signed-in participant sees of its team's quota (docs/participants.md)."""
