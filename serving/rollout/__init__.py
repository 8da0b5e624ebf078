"""The rollout tool: an operator's client of ModelService (`python -m serving.rollout`)."""
