"""Analyses of nets and runs, importable without flags: each module is one analysis, its entry point a thin wrapper.

``reversibility`` (round trips through the generator, spectra, Gaussian
controls), ``random_like`` (weight statistics against Gaussian
calibration), ``theory_sweeps`` (the theory's recovery sweeps), ``grid``
(the results grid's plans and runs) and ``grid_report`` (its statistics).
"""
