"""The platform as served: the API (``api``) composed with the leaderboard's HTML pages (``leaderboard_web``)."""
