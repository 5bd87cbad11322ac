"""Steering with features: choose latents that steer, steer generations, measure the steer,
and compare with a dense baseline; all through the lens's edits (no hooks of its own).
docs/steering.md describes the methods, the measurements and the deviations from the papers.
"""

from sparselens.steering.ablation import AblationResult, ablation_study
from sparselens.steering.checks import SteeringInputError
from sparselens.steering.contrast import contrast_latents, mean_difference_vector
from sparselens.steering.input_scores import InputScore, input_scores
from sparselens.steering.logit_lens import logit_lens_top_tokens
from sparselens.steering.measures import ConceptSimilarity, repetition_rate
from sparselens.steering.output_scores import OutputScore, output_scores
from sparselens.steering.response import family_probability
from sparselens.steering.steer import SideBySide, Steer, latent_steer, side_by_side, vector_steer
from sparselens.steering.sweep import SweepResult, sweep

__all__ = [
    "AblationResult", "ConceptSimilarity", "InputScore", "OutputScore", "SideBySide", "Steer",
    "SteeringInputError", "SweepResult", "ablation_study", "contrast_latents",
    "family_probability", "input_scores", "latent_steer", "logit_lens_top_tokens",
    "mean_difference_vector", "output_scores", "repetition_rate", "side_by_side", "sweep",
    "vector_steer",
]
