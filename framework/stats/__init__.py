"""Group statistics on the edge store: model matrices and contrasts, edge cubes, p-value adjustment,
the batched engines (REML mixed models, MMRM, permutations) and the stage's engine."""
