"""Deprecated: the arithmetic claim checker moved to `lema_hub.corrector.claims`."""

from lema_hub.corrector.claims import Claim, claims_in, false_claims, first_false_step, rules_ref

__all__ = ["Claim", "claims_in", "false_claims", "first_false_step", "rules_ref"]
