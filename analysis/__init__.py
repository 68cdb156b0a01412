"""Mechanistic analysis of a trained model: each module takes a model and a circuit.Grid (all p*p pairs) and
returns plain data. fourier (bases, spectra), circuit (key frequencies, restricted and excluded losses),
neurons (ablations, circuit size), components (component ablations), clock_pizza (Zhong et al.), attention
(the transformer's heads), progress_measures (snapshots over training), summary (all of it, and its findings).
Imports only the core."""
