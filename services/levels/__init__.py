"""Growth (成长值) and tiers with perks, downgrade policies, badges and leaderboards."""
