"""Evaluators: ``(dictionary, held-out data, model?) -> metrics``, written as versioned JSON."""

from sparselens.evaluation.reconstruction import reconstruction_metrics, relative_bias
from sparselens.evaluation.results import read_latent_density, read_results, write_results
from sparselens.evaluation.spliced import loss_recovered, spliced_metrics

__all__ = [
    "loss_recovered",
    "read_latent_density",
    "read_results",
    "reconstruction_metrics",
    "relative_bias",
    "spliced_metrics",
    "write_results",
]
