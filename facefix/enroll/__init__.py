"""Enrolling a person (api: the front door): their face in each photo (select), their fast restorer
(fast), Dual-Pivot Tuning (diffusion), and forgetting them (forget).
"""
