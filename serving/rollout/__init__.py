"""The rollout tool: an operator's client of ModelService and PredictionService that gates a
canary on its answers before promoting it (`python -m serving.rollout`)."""
