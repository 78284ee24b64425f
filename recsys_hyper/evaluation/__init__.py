"""Cold-start evaluation: the protocol (a seeded user split, chronological episodes), the runner that
fits and measures every method on it, the onboarding and explanation protocols, and the report."""
