"""Preference and reward training (DPO, ORPO, KTO, SimPO, GRPO) on TRL's trainers.

`run.train_preference` is the runner's branch for these types: the data becomes
the rows TRL reads (data.py), GRPO's rewards are built (rewards.py), and held-out
preference accuracy is measured before and after (evaluate.py). Progress, cancel,
checkpoints and the saved folder are the supervised runs' own.
"""
