"""Analyses of nets and runs, importable without flags: each module is one analysis, its entry point a thin wrapper.

``reversibility`` (round trips through the generator, spectra, Gaussian
controls), ``random_like`` (weight statistics against Gaussian
calibration), ``theory_sweeps`` (the theory's recovery sweeps), ``sweep``
(grids of runs as data, tuned and run resumably), ``sweep_stats`` (their
statistics over seeds), ``full_label_grid`` and ``few_label_grid`` (the two
grids' shapes and reports). Each analysis returns a ``report_files.Report``
(the stem of its files, its numbers, its markdown), which ``report_files.write``
writes; its figures it draws itself into the folder it is given.
"""
