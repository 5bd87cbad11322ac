"""Circuits: how latents cause a model's output (docs/circuits.md).

- `attribution`: each latent's attribution to a metric (activation x gradient, or integrated
  gradients), with error nodes for what the dictionaries miss;
- `graph`: attribution graphs through transcoders on the linearised replacement model, pruned
  by influence, exported as JSON;
- `validate`: ablate a graph's top nodes in the real model, predicted against measured;
- `flow`: data-free matching of latents between dictionaries at consecutive layers.
"""
