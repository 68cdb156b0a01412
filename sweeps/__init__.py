"""Many runs at once: database (SQLite, one row per run), batched (models side by side in one process), runner
(chunks over engines and backends: local processes or Ray), regimes (run regimes and the phase diagram).
Imports the core, and the analysis for --analyze."""
