"""Reinforcement-learning parts that ``GRPOModule`` orchestrates: rollouts and the rollout buffer, advantages,
reward scoring, and completion log-probs."""
