"""Prize pools: weighted CSPRNG draws, stock, budget, pity and an auditable draw log."""
