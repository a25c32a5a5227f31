"""The ways in and out: one adapter per platform, and what the social ones share."""
