"""Pure curation math: arrays in, arrays out (no files, no connections).

- :mod:`~smt_tools.curation.exclusion`: which tiles are excluded (docs/algorithms.md §5)
- :mod:`~smt_tools.curation.composition`: CLR + KMeans, choice of k, freq_cluster_weight = 1 / cluster size (§6)
- :mod:`~smt_tools.curation.uniqueness`: cosine kNN uniqueness (§7)
- :mod:`~smt_tools.curation.ranking`: average ranks and the six sampling methods (§8)
- :mod:`~smt_tools.curation.weights`: rare-class boost, scaling, floor (§9)
- :mod:`~smt_tools.curation.diagnostics`: effective sample size, class pixel shares (§9.5)
"""
