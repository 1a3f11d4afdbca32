"""The gateway: the only door. Member API (LoyaltyService) and ops API (AdminService), API keys
and tenancy, and the sagas that run redemptions and draws across the participants."""
