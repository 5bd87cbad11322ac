"""Comparing features: across seeds, widths, hookpoints, models and datasets (docs/comparison.md).

matching     one-to-one matching (Hungarian, exact or on a sparse candidate graph), PW-MCC
correlation  activation correlation of latents on shared tokens
splitting    many-to-one: a latent of a small dictionary as a combination of a large one's
universality SVCCA and linear CKA of paired feature spaces across models, permutation baseline
itda         inference-time decomposition of activations (dictionaries without training)
datadiff     document embeddings from latents, corpus A vs B per latent, clustering, retrieval
"""
